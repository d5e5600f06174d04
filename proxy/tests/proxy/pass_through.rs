//! Passed-through requests under a burst of connections: the proxy reuses its backend
//! connections, the backend's listen queue takes the burst, and a failed connect to the
//! local backend is tried again before anyone gets a 503.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;

use crate::stack::*;

/// A closed loop of 512 connections issuing tokens through the proxy. Every answer is the
/// backend's: a token, or, when more arrive than its database pool can take, its own
/// load-shedding 503. None is the proxy's "the backend is not answering", and no
/// connection fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_512_connections_gets_no_503() {
    let stack = Stack::start(1).await;
    let (id, secret) = stack.create_client(&["client_credentials"], &["read"]).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();
    let url = stack.at(0, "/oauth/token");
    let deadline = Instant::now() + Duration::from_secs(6);
    let loops = (0..512).map(|_| {
        let (client, url, id, secret) = (client.clone(), url.clone(), id.clone(), secret.clone());
        async move {
            let mut statuses = Vec::new();
            // Bounded in count and in time.
            for _ in 0..40 {
                if Instant::now() > deadline {
                    break;
                }
                let issued = client.post(&url).basic_auth(&id, Some(&secret)).form(&[("grant_type", "client_credentials")]).send().await;
                statuses.push(match issued {
                    Ok(r) if r.status() == StatusCode::OK => "200".to_string(),
                    Ok(r) => format!("{} {}", r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => format!("transport: {e}"),
                });
            }
            statuses
        }
    });
    let statuses: Vec<String> = join_all(loops).await.into_iter().flatten().collect();
    let failed: Vec<&String> =
        statuses.iter().filter(|s| *s != "200" && !s.contains("no database connection became free in time")).collect();
    assert!(statuses.len() >= 512, "only {} requests were made", statuses.len());
    assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), statuses.len(), &failed[..failed.len().min(20)]);
}
