//! Seed data: users, OAuth clients and pre-issued access tokens.
//!
//! Through the API each user create costs an argon2 hash on the server (about 60 a
//! second on two cores, so nearly three minutes for 10k). So only the first user goes
//! through the API — the backend hashes its password with the parameters it runs with —
//! and the others are inserted into PostgreSQL with that same hash: every login still
//! costs the server exactly one full verification. Clients and tokens go through the
//! API, which is cheap and keeps their secrets real.

use anyhow::Context;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio_postgres::NoTls;

use crate::client::{Api, OAuthClient};

/// The load-test scenarios' users: `loadtest-0..n`.
pub fn username(i: usize) -> String {
    format!("loadtest-{i}")
}

/// A connection to the backend's database; it lives as long as the client.
pub async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let (db, connection) = config.connect(NoTls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(db)
}

/// Creates users `name(0..n)` with [`crate::client::PASSWORD`]: the first through the
/// admin API, the others in one insert with its password hash.
pub async fn users(
    api: &Api,
    admin_token: &str,
    db: &tokio_postgres::Client,
    n: usize,
    name: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    api.create_user(admin_token, &name(0)).await?;
    let hash: String = db
        .query_one("SELECT password_hash FROM users WHERE username = $1", &[&name(0)])
        .await
        .context("reading the first user's password hash")?
        .get(0);
    // UUIDv7 ids, as the backend makes them: the proxy's Bloom filter reads their time.
    let ids: Vec<uuid::Uuid> = (1..n).map(|_| uuid::Uuid::now_v7()).collect();
    let names: Vec<String> = (1..n).map(name).collect();
    let emails: Vec<String> = names.iter().map(|u| format!("{u}@loadtest.example")).collect();
    db.execute(
        "INSERT INTO users (id, username, email, password_hash, created_at, updated_at)
         SELECT id, username, email, $4, now(), now() FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, username, email)",
        &[&ids, &names, &emails, &hash],
    )
    .await
    .context("inserting users")?;
    Ok(())
}

/// The server version and the durability settings the write figures depend on.
pub struct DatabaseSettings {
    pub version: String,
    pub fsync: String,
    pub synchronous_commit: String,
}

pub async fn database_settings(db: &tokio_postgres::Client) -> anyhow::Result<DatabaseSettings> {
    let row = db
        .query_one("SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')", &[])
        .await
        .context("reading PostgreSQL's settings")?;
    Ok(DatabaseSettings { version: row.get(0), fsync: row.get(1), synchronous_commit: row.get(2) })
}

impl std::fmt::Display for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL {} (fsync={}, synchronous_commit={})", self.version, self.fsync, self.synchronous_commit)
    }
}

/// Creates `n` OAuth clients through the admin API, named `<prefix>-client-<i>`.
pub async fn clients(api: &Api, admin_token: &str, prefix: &str, n: usize) -> anyhow::Result<Vec<OAuthClient>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(api.create_client(admin_token, &format!("{prefix}-client-{i}")).await?);
    }
    Ok(out)
}

/// Pre-issues `n` `client_credentials` access tokens, 16 requests at a time.
pub async fn tokens(api: &Api, client: &OAuthClient, n: usize) -> anyhow::Result<Vec<String>> {
    futures::stream::iter(0..n)
        .map(|_| async move { api.issue(client).await.map_err(|e| anyhow::anyhow!("POST /oauth/token: {e}")) })
        .buffer_unordered(16)
        .try_collect::<Vec<String>>()
        .await
        .context("pre-issuing tokens")
}
