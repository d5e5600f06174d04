//! The proxy's security controls (docs/security.md), tested the way an attacker would
//! try them: raw sockets where an HTTP client cannot express the attack.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;
use quantaid_protocol::cache;
use quantaid_protocol::introspection::INTROSPECT_RIGHT;
use quantaid_protocol::token::{self, TokenKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stack::*;

type Seen = Arc<Mutex<Vec<HashMap<String, Vec<String>>>>>;

/// A stand-in backend that records the headers of every request it gets.
async fn recorder() -> (std::net::SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let s = s.clone();
        async move {
            let mut all: HashMap<String, Vec<String>> = HashMap::new();
            for (name, value) in &headers {
                all.entry(name.as_str().to_string()).or_default().push(value.to_str().unwrap_or_default().to_string());
            }
            s.lock().unwrap().push(all);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn addr_of(proxy: &Proxy) -> String {
    proxy.url.trim_start_matches("http://").to_string()
}

/// Reads a whole HTTP/1.1 answer that ends with the connection (bounded: 15 s).
async fn read_answer(stream: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Sends raw bytes on a fresh connection and reads the answer.
async fn raw(addr: &str, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    read_answer(&mut stream).await
}

fn assert_error(answer: &(u16, Value), status: u16, what: &str) {
    assert_eq!(answer.0, status, "{what}: {answer:?}");
    assert!(answer.1["error"].is_string() && answer.1["error_description"].is_string(), "{what}: no JSON error body: {answer:?}");
}

/// docs/security.md, "X-Quantaid-* headers from clients are dropped": no `X-Quantaid-*` header a client wrote reaches the backend.
#[tokio::test]
async fn client_supplied_quantaid_headers_are_stripped() {
    let stack = Stack::start(0).await;
    let (backend, seen) = recorder().await;
    let proxy = stack.spawn_proxy(backend, &[]).await;
    let r = stack
        .http
        .post(format!("{}/v1/clients", proxy.url))
        .header("X-Quantaid-User-Id", "0190b0a2-0000-7000-8000-000000000000")
        .header("x-QUANTAID-scopes", "admin")
        .header("X-Quantaid-Anything-New", "forged")
        .header("X-Other", "kept")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    let request = seen.iter().find(|h| h.contains_key("x-other")).expect("the request reached the backend");
    let forged: Vec<&String> = request.keys().filter(|k| k.starts_with("x-quantaid-")).collect();
    assert!(forged.is_empty(), "forged headers passed on: {forged:?}");
}

/// docs/security.md, "X-Forwarded-For from the proxy": the proxy sets `X-Forwarded-For` itself: the peer, or what a configured
/// trusted ingress says the client is. A client cannot choose its own address.
#[tokio::test]
async fn forwarded_for_is_the_proxys_own_view() {
    let stack = Stack::start(0).await;
    let (backend, seen) = recorder().await;
    let direct = stack.spawn_proxy(backend, &[]).await;
    let behind_ingress = stack.spawn_proxy(backend, &[("QUANTAID_PROXY_TRUSTED_INGRESS", "127.0.0.0/8")]).await;
    let forwarded = |proxy: &Proxy, xff: Option<&'static str>| {
        let request = stack.http.post(format!("{}/v1/auth/login", proxy.url)).header("x-probe", "1").body("{}");
        let request = match xff {
            Some(v) => request.header("x-forwarded-for", v).header("x-real-ip", "6.6.6.6").header("forwarded", "for=6.6.6.6"),
            None => request,
        };
        let seen = seen.clone();
        async move {
            request.send().await.unwrap();
            let last = seen.lock().unwrap().iter().rev().find(|h| h.contains_key("x-probe")).cloned().unwrap();
            assert!(!last.contains_key("x-real-ip") && !last.contains_key("forwarded"), "{last:?}");
            last.get("x-forwarded-for").cloned().unwrap_or_default()
        }
    };
    // A client on loopback (a mesh sidecar, a port-forward) is not an ingress.
    assert_eq!(forwarded(&direct, Some("6.6.6.6")).await, vec!["127.0.0.1"]);
    assert_eq!(forwarded(&direct, None).await, vec!["127.0.0.1"]);
    // Behind a trusted ingress: the client it saw, not what the client prepended.
    assert_eq!(forwarded(&behind_ingress, Some("6.6.6.6, 203.0.113.7")).await, vec!["203.0.113.7"]);
    assert_eq!(forwarded(&behind_ingress, Some("6.6.6.6, garbage")).await, vec!["127.0.0.1"]);
    assert_eq!(forwarded(&behind_ingress, None).await, vec!["127.0.0.1"]);
}

/// docs/security.md, "X-Forwarded-For from the proxy", end to end: failed logins with a different forged `X-Forwarded-For` each
/// still land in one per-IP bucket and are audited under the real address.
#[tokio::test]
async fn forged_forwarded_for_does_not_escape_throttling_or_the_audit_log() {
    let stack = Stack::start(1).await;
    stack.create_user("victim").await;
    let mut throttled = false;
    for i in 0..60 {
        let body = json!({"username": format!("nobody{i}"), "password": "wrong password"});
        let r = stack
            .http
            .post(stack.at(0, "/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "60 failed logins from one client were never throttled");
    let page: Value = stack
        .http
        .get(stack.at(0, "/v1/audit-logs?action=login.failure&limit=500"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let addresses: Vec<&str> = page["items"].as_array().unwrap().iter().filter_map(|e| e["ip_address"].as_str()).collect();
    assert!(!addresses.is_empty() && addresses.iter().all(|a| *a == "127.0.0.1"), "{addresses:?}");
}

/// docs/security.md, "Forged tokens": tokens stamped in the future cost no backend call; forged tokens stamped
/// "now" cost one each, and a repeated one is then answered from the negative cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_cost_bounded_backend_calls() {
    let stack = Stack::start(1).await;
    let client = stack.create_client(&["client_credentials"], &["read"]).await;
    let real = stack.issue(0, &client).await;
    assert_eq!(stack.introspect(0, &client, &real).await.1["active"], true); // the client is now known
    let check = |bearer: String| {
        let r = stack.http.get(stack.at(0, "/v1/auth/check")).bearer_auth(bearer);
        async move { r.send().await.unwrap().status() }
    };

    // A year ahead (or just past the tolerated clock skew): refused before any lookup.
    let before = backend_requests(&stack).await;
    let skew = chrono::Duration::milliseconds(token::MAX_CLOCK_SKEW_MS + 60_000);
    for i in 0..20 {
        let at = if i % 2 == 0 { chrono::Utc::now() + chrono::Duration::days(365) } else { chrono::Utc::now() + skew };
        let forged = token::generate(TokenKind::Access, at);
        assert_eq!(stack.introspect(0, &client, &forged).await.1, json!({"active": false}));
        assert_eq!(check(forged).await, StatusCode::UNAUTHORIZED);
        let session = token::generate(TokenKind::Session, at);
        assert_eq!(stack.session(0, &session).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(backend_requests(&stack).await - before, 0.0, "future-dated tokens reached the backend");

    // Stamped "now" (here: a few seconds ahead, within the tolerated skew, so that the
    // Bloom filter's watermark never reaches them during the test): one lookup each;
    // once looked up, the negative cache answers repeats.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(10);
    let fresh: Vec<String> = (0..20).map(|_| token::generate(TokenKind::Access, soon)).collect();
    let before = backend_requests(&stack).await;
    for _ in 0..5 {
        for forged in &fresh {
            assert_eq!(check(forged.clone()).await, StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(backend_requests(&stack).await - before, 20.0, "one lookup per distinct fresh forged token");
}

/// docs/security.md, "Forged tokens", measured: backend calls per 10,000 forged requests of each kind, through one
/// replica (printed). Ceilings, not speeds. 40,000 requests take minutes on a debug
/// build, so it runs on demand:
/// `cargo test -p quantaid-proxy --test proxy backend_calls_per_10k -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement of 40,000 requests; run with --ignored --nocapture"]
async fn backend_calls_per_10k_forged_requests() {
    let stack = Arc::new(Stack::start(1).await);
    let old = chrono::Utc::now() - chrono::Duration::minutes(10);
    // Wait until the Bloom filter judges old keys (its first snapshot is in).
    eventually("the Bloom filter is loaded", || async {
        let forged = token::generate(TokenKind::Access, old);
        let r = stack.http.get(stack.at(0, "/v1/auth/check")).bearer_auth(forged).send().await.unwrap();
        r.status() == StatusCode::UNAUTHORIZED && stack.proxy_metric(0, r#"quantaid_bloom_rejections_total{reason="absent"}"#).await > 0.0
    })
    .await;
    // Stamped a few seconds ahead (within the tolerated skew) stands for "now" while
    // the run lasts: the Bloom watermark does not reach those tokens meanwhile.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(10);
    let pool: Vec<String> = (0..100).map(|_| token::generate(TokenKind::Access, soon)).collect();
    type MakeToken = Box<dyn Fn(usize) -> String + Send + Sync>;
    let kinds: [(&str, MakeToken); 4] = [
        ("stamped now, 100 distinct, each sent 100 times", Box::new(move |i| pool[i % 100].clone())),
        (
            "stamped a year ahead, all distinct",
            Box::new(|_| token::generate(TokenKind::Access, chrono::Utc::now() + chrono::Duration::days(365))),
        ),
        ("stamped 10 min ago, all distinct", Box::new(move |_| token::generate(TokenKind::Access, old))),
        ("stamped now, all distinct", Box::new(|_| token::generate(TokenKind::Access, chrono::Utc::now()))),
    ];
    let mut calls = Vec::new();
    for (name, make) in kinds {
        let make = Arc::new(make);
        let before = backend_requests(&stack).await;
        let workers: Vec<_> = (0..16)
            .map(|w| {
                let (stack, make) = (stack.clone(), make.clone());
                tokio::spawn(async move {
                    for i in (w..10_000).step_by(16) {
                        let r = stack.http.get(stack.at(0, "/v1/auth/check")).bearer_auth(make(i)).send().await.unwrap();
                        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let n = backend_requests(&stack).await - before;
        println!("forged tokens {name}: {n} backend calls per 10000 requests");
        calls.push(n);
    }
    assert!(calls[0] <= 100.0, "repeats are negative-cached: {}", calls[0]);
    assert_eq!(calls[1], 0.0, "future-dated");
    assert_eq!(calls[2], 0.0, "old, judged by the Bloom filter");
    assert!(calls[3] <= 10_000.0);
}

/// docs/security.md, "Request head limits": the request head has a size limit (431 with the JSON error body), checked
/// while reading, so a client cannot make a replica hold more than that.
#[tokio::test]
async fn request_head_size_limit() {
    let stack = Stack::start(1).await;
    let addr = addr_of(&stack.proxies[0]);
    let head = |size: usize| format!("GET /health HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\nConnection: close\r\n\r\n", "a".repeat(size));
    assert_eq!(raw(&addr, head(20 * 1024).as_bytes()).await.0, 200, "20 KiB is within the default 32 KiB");
    assert_error(&raw(&addr, head(40 * 1024).as_bytes()).await, 431, "40 KiB");
    assert_error(&raw(&addr, head(900 * 1024).as_bytes()).await, 431, "900 KiB");
    // An unfinished head is cut off at the limit, not buffered to 1 MiB.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nX-Pad: ").await.unwrap();
    let mut sent = 0;
    let chunk = vec![b'a'; 8192];
    while sent < 1024 * 1024 && stream.write_all(&chunk).await.is_ok() {
        sent += chunk.len();
        if sent > 64 * 1024 {
            break;
        }
    }
    assert_error(&read_answer(&mut stream).await, 431, "unfinished head");
    // Configurable.
    let small = stack.spawn_proxy(stack.backend_addr(), &[("QUANTAID_PROXY_MAX_HEADER_BYTES", "16384")]).await;
    assert_error(&raw(&addr_of(&small), head(20 * 1024).as_bytes()).await, 431, "20 KiB over a 16 KiB limit");
}

/// docs/security.md, "Request head limits": a head dripped one line at a time, or never sent, is cut off at the total
/// header deadline (408 with the JSON error body).
#[tokio::test]
async fn request_head_deadline() {
    let stack = Stack::start(0).await;
    let proxy = stack.spawn_proxy(stack.backend_addr(), &[("QUANTAID_PROXY_HEADER_TIMEOUT_MS", "1000")]).await;
    let addr = addr_of(&proxy);
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let mut lines = 0;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream.write_all(format!("X-Drip-{i}: 1\r\n").as_bytes()).await.is_err() {
            break;
        }
        lines += 1;
    }
    assert!(lines < 20, "a head dripped over 6 s was never cut off");
    assert_error(&read_answer(&mut stream).await, 408, "dripped head");
    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    assert_error(&read_answer(&mut silent).await, 408, "silent connection");
    // The deadline is per request head: a kept-alive connection serves a second request.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
    assert_eq!(read_answer(&mut stream).await.0, 200, "an idle kept-alive connection is not a slow head");
}

/// docs/security.md, "Body-read deadline": a body that trickles in is cut off at the body deadline (408), for cached
/// introspection and for passed-through calls alike.
#[tokio::test]
async fn request_body_deadline() {
    let stack = Stack::start(0).await;
    let proxy = stack.spawn_proxy(stack.backend_addr(), &[("QUANTAID_PROXY_BODY_TIMEOUT_MS", "1000")]).await;
    let addr = addr_of(&proxy);
    for (path, content_type) in [("/oauth/introspect", "application/x-www-form-urlencoded"), ("/v1/auth/login", "application/json")] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: {content_type}\r\nContent-Length: 100\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut sent = 0;
        while sent < 100 && started.elapsed() < Duration::from_secs(8) {
            if stream.write_all(b"a").await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(sent < 100, "{path}: a body dripped over 10 s was never cut off");
        assert_error(&read_answer(&mut stream).await, 408, path);
    }
}

/// docs/security.md, "Connection cap": one replica holds at most QUANTAID_PROXY_MAX_CONNECTIONS client connections;
/// the next one gets 503 with the JSON error body at once.
#[tokio::test]
async fn connection_cap() {
    let stack = Stack::start(0).await;
    let proxy = stack.spawn_proxy(stack.backend_addr(), &[("QUANTAID_PROXY_MAX_CONNECTIONS", "8")]).await;
    let addr = addr_of(&proxy);
    // The readiness probe's connection may still be open: fill whatever room is left.
    let mut held = Vec::new();
    let refused = loop {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.starts_with("HTTP/1.1 200") {
            held.push(stream);
            assert!(held.len() <= 8, "more than 8 connections accepted");
            continue;
        }
        break text;
    };
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let body: Value = serde_json::from_str(refused.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(held.len() >= 7, "only {} connections before the cap", held.len());
    // Room comes back when a connection closes.
    drop(held.pop());
    eventually("a closed connection frees its place", || async {
        raw(&addr, b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.0 == 200
    })
    .await;
}

/// docs/security.md, "Protocol errors answered with JSON": framing errors are answered with the `{"error","error_description"}` body.
#[tokio::test]
async fn protocol_errors_have_json_bodies() {
    let stack = Stack::start(1).await;
    let addr = addr_of(&stack.proxies[0]);
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "conflicting Content-Length",
            "POST /v1/auth/login HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".into(),
            400,
        ),
        ("negative Content-Length", "POST /v1/auth/login HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n".into(), 400),
        ("obs-fold", "GET /health HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n".into(), 400),
        ("too many headers", format!("GET /health HTTP/1.1\r\nHost: a\r\n{many}\r\n"), 431),
        ("CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".into(), 405),
        ("bad header name", "GET /health HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n".into(), 400),
        ("non-chunked final coding", "POST /v1/auth/login HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".into(), 400),
    ];
    for (what, request, status) in cases {
        assert_error(&raw(&addr, request.as_bytes()).await, status, what);
    }
    // Well-formed requests still pass, pipelined or kept alive.
    let two = "GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(two.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.matches("HTTP/1.1 200").count() >= 1, "{text}");
}

/// docs/security.md, "Introspection scope": a client without the `introspect` right sees only its own tokens, on the
/// proxy's cached path exactly as on the backend; its "inactive" answer is never
/// cached for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_scope_on_the_cached_path() {
    let stack = Stack::start(2).await;
    let owner = stack.create_client(&["client_credentials"], &["read"]).await;
    let stranger = stack.create_client(&["client_credentials"], &["read"]).await;
    let resource_server = stack.create_client(&["client_credentials"], &[INTROSPECT_RIGHT]).await;
    let token = stack.issue(0, &owner).await;
    for replica in [0, 1] {
        // Twice each: once verified by the backend, then from the replica's memory and Redis.
        for _ in 0..2 {
            assert_eq!(stack.introspect(replica, &stranger, &token).await.1, json!({"active": false}), "stranger on {replica}");
            assert_eq!(stack.introspect(replica, &owner, &token).await.1["active"], true, "owner on {replica}");
            let full = stack.introspect(replica, &resource_server, &token).await.1;
            assert_eq!((full["active"].as_bool(), full["client_id"].as_str()), (Some(true), Some(owner.0.as_str())));
        }
    }
    assert!(stack.proxy_metric(1, r#"quantaid_cache_hits_total{kind="token"}"#).await > 0.0, "the cached path was taken");
}

/// docs/security.md, "Client lifecycle": disabling a client, rotating its secret, or deleting it ends every token of
/// it on every replica at once, and every replica forgets the client's credentials at
/// once (not after QUANTAID_CACHE_CLIENT_TTL_SECS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lifecycle_across_replicas() {
    let stack = Stack::start(2).await;
    let resource_server = stack.create_client(&["client_credentials"], &[INTROSPECT_RIGHT]).await;
    for change in ["disable", "rotate", "delete"] {
        let client = stack.create_client(&["client_credentials"], &["read"]).await;
        let token = stack.issue(0, &client).await;
        // Both replicas have the token cached and the client's credentials remembered.
        for replica in [0, 1] {
            for _ in 0..2 {
                assert_eq!(stack.introspect(replica, &client, &token).await.1["active"], true);
                assert_eq!(stack.introspect(replica, &resource_server, &token).await.1["active"], true);
            }
            let r = stack.http.get(stack.at(replica, "/v1/auth/check")).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let path = format!("/v1/clients/{}", client.0);
        let new_secret = match change {
            "disable" => {
                let r =
                    stack.http.patch(stack.at(0, &path)).bearer_auth(ADMIN_TOKEN).json(&json!({"disabled": true})).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                None
            }
            "rotate" => {
                let r = stack.http.post(stack.at(0, &format!("{path}/secret"))).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                Some(r.json::<Value>().await.unwrap()["client_secret"].as_str().unwrap().to_string())
            }
            _ => {
                let r = stack.http.delete(stack.at(0, &path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::NO_CONTENT);
                None
            }
        };
        // At once, on both replicas: the token is dead and the old credentials refused.
        for replica in [1, 0] {
            assert_eq!(stack.introspect(replica, &resource_server, &token).await.1, json!({"active": false}), "{change} on {replica}");
            let r = stack.http.get(stack.at(replica, "/v1/auth/check")).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{change}: forward-auth on {replica}");
            let (status, body) = stack.introspect(replica, &client, &token).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("invalid_client")),
                "{change}: old credentials on {replica}"
            );
        }
        if let Some(secret) = new_secret {
            let rotated = (client.0.clone(), secret);
            let fresh = stack.issue(1, &rotated).await;
            for replica in [0, 1] {
                assert_eq!(stack.introspect(replica, &rotated, &fresh).await.1["active"], true, "new secret on {replica}");
                assert_eq!(stack.introspect(replica, &rotated, &token).await.1["active"], false);
            }
        }
    }
}

/// docs/security.md, "Client lifecycle": the fill guard and the lookup honour the client marker, as they do the
/// user marker: a fill that read the database before the change cannot land after it.
#[tokio::test]
async fn client_marker_guards_fills_and_lookups() {
    let stack = Stack::start(0).await;
    let mut r = stack.redis().await;
    let fill = redis::Script::new(cache::FILL_SCRIPT);
    let lookup = redis::Script::new(cache::LOOKUP_SCRIPT);
    let entry = |created: i64| cache::entry(Some(created), None, None, Some("c1"), "{\"active\":true}");
    let _: () = redis::cmd("SET").arg(cache::client_revoked_before_key("c1")).arg(1000).query_async(&mut r).await.unwrap();
    let refused: i64 =
        fill.key("token:a").arg(entry(1000)).arg(60_000).arg("").arg(1000).arg("").arg("c1").invoke_async(&mut r).await.unwrap();
    assert_eq!(refused, 0, "a token created at or before the client marker is not filled");
    let written: i64 =
        fill.key("token:b").arg(entry(1001)).arg(60_000).arg("").arg(1001).arg("").arg("c1").invoke_async(&mut r).await.unwrap();
    assert_eq!(written, 1);
    // An entry written before the marker moved is ignored once it has.
    let _: () = redis::cmd("SET").arg(cache::client_revoked_before_key("c1")).arg(2000).query_async(&mut r).await.unwrap();
    let (status, _): (String, String) = lookup.key("token:b").arg("").arg("").arg("").invoke_async(&mut r).await.unwrap();
    assert_eq!(status, "miss");
    // A remembered caller whose marker moved must be verified again.
    let (status, _): (String, String) = lookup.key("token:b").arg("").arg("c1").arg("1000").invoke_async(&mut r).await.unwrap();
    assert_eq!(status, "caller");
    let (status, _): (String, String) = lookup.key("token:b").arg("").arg("c1").arg("2000").invoke_async(&mut r).await.unwrap();
    assert_eq!(status, "miss");
}

/// The proxy reads OAuth2 requests by the backend's rules (quantaid_protocol::oauth_form):
/// a request the proxy answers itself gets the status and error the backend would give.
#[tokio::test]
async fn malformed_client_authentication_is_answered_as_the_backend_answers_it() {
    let stack = Stack::start(1).await;
    let (id, secret) = stack.create_client(&["client_credentials"], &["read"]).await;
    let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
    let cases: Vec<(&str, Option<String>, String)> = vec![
        ("two methods", Some(basic(&format!("{id}:{secret}"))), format!("token=x&client_id={id}&client_secret={secret}")),
        ("no client", None, "token=x".into()),
        ("secret without id", None, format!("token=x&client_secret={secret}")),
        ("Basic that is not base64", Some("Basic !!!".into()), "token=x".into()),
        ("Basic without a colon", Some(basic("just-an-id")), "token=x".into()),
        ("repeated parameter", Some(basic(&format!("{id}:{secret}"))), "token=x&token=y".into()),
        ("NUL in the client id", None, format!("token=x&client_id=a%00b&client_secret={secret}")),
    ];
    for (what, authorization, body) in cases {
        let mut answers = Vec::new();
        for base in [stack.at(0, ""), stack.backend.url.clone()] {
            let mut request = stack
                .http
                .post(format!("{base}/oauth/introspect"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone());
            if let Some(a) = &authorization {
                request = request.header("authorization", a);
            }
            let r = request.send().await.unwrap();
            let status = r.status();
            let error = r.json::<serde_json::Value>().await.unwrap()["error"].clone();
            answers.push((status, error));
        }
        assert!(answers[0].0.is_client_error(), "{what}: {answers:?}");
        assert_eq!(answers[0], answers[1], "{what}: proxy, then backend");
    }
}
