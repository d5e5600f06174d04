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

/// A backend that answers its internal endpoints at once (503, so the proxy starts) and
/// never answers anything else.
async fn silent_backend() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = socket.read(&mut chunk).await {
                    seen.extend_from_slice(&chunk[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n")
                        && seen.split(|&b| b == b' ').nth(1).is_some_and(|p| p.starts_with(b"/internal"))
                    {
                        seen.clear();
                        let _ = socket.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
                    }
                }
            });
        }
    });
    addr
}

/// Reads one response (head and Content-Length body) from `stream`; `None` when the
/// connection ends first.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return Some(head);
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// The proxy's own 503 for a backend that did not answer in time either keeps the
/// client's connection usable or says `Connection: close`: a pooled client that reuses a
/// connection the answer called kept-alive must not find it closed under its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_for_a_slow_backend_closes_only_a_connection_it_said_it_would() {
    use tokio::io::AsyncWriteExt;
    let stack = Stack::start(0).await;
    let backend = silent_backend().await;
    let proxy = stack.spawn_proxy(backend, &[("QUANTAID_BACKEND_TIMEOUT_MS", "300"), ("QUANTAID_LOOKUP_TIMEOUT_MS", "300")]).await;
    let addr = proxy.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = "grant_type=client_credentials";
    let request = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_response(&mut stream).await.expect("an answer");
    assert!(head.starts_with("http/1.1 503"), "{head}");
    if head.lines().any(|l| l.trim() == "connection: close") {
        return;
    }
    // Called kept-alive: the next request on it gets an answer.
    stream.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let next = read_response(&mut stream).await;
    assert!(next.as_deref().is_some_and(|h| h.starts_with("http/1.1 200")), "the 503 said keep-alive ({head:?}), then: {next:?}");
}
