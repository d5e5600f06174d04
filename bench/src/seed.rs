//! Seeding through the public API: users, one OAuth client, and a pool of tokens.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;

use crate::api::Api;

/// Runs `op(0..n)` with at most `concurrency` in flight; the first error fails the lot.
async fn for_each<F, Fut, T>(n: usize, concurrency: usize, op: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let fut = op(i);
        tasks.spawn(async move {
            let result = fut.await;
            drop(permit);
            (i, result)
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined?;
        out[i] = Some(result?);
    }
    Ok(out.into_iter().flatten().collect())
}

/// Creates `n` users named `bench-<run>-<i>`, unique per run so an existing database
/// can be reused. Each create costs an argon2 hash on the server, so a few run at once
/// (the backend admits hash workers + 64 queued; we stay well under that).
pub async fn users(api: &Api, n: usize, run_id: &str) -> anyhow::Result<Vec<String>> {
    let names: Arc<[String]> = (0..n).map(|i| format!("bench-{run_id}-{i}")).collect();
    for_each(n, 8, |i| {
        let (api, names) = (api.clone(), names.clone());
        async move { api.create_user(&names[i]).await }
    })
    .await
    .context("seeding users")?;
    Ok(names.to_vec())
}

/// Pre-issues `n` `client_credentials` access tokens for the introspection scenario.
pub async fn tokens(api: &Api, n: usize) -> anyhow::Result<Vec<String>> {
    for_each(n, 16, |_| {
        let api = api.clone();
        async move { api.issue_token().await.map_err(|e| anyhow::anyhow!("POST /oauth/token: {e}")) }
    })
    .await
    .context("pre-issuing tokens")
}
