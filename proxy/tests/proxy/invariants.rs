//! The invariants of docs/design.md, tested directly: across replicas, under races and under
//! faults.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use quantaid_protocol::token::{self, TokenKind};
use reqwest::StatusCode;
use serde_json::json;

use crate::stack::*;

/// Invariant 1: created through replica A, looked up at once through replica B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_not_found_across_replicas() {
    let stack = Stack::start(2).await;
    let client = stack.create_client(&["client_credentials"], &["read"]).await;
    let mut tokens = Vec::new();
    for round in 0..1000 {
        let token = stack.issue(0, &client).await;
        let (status, body) = stack.introspect(1, &client, &token).await;
        assert_eq!((status, body["active"].as_bool()), (StatusCode::OK, Some(true)), "round {round}");
        tokens.push(token);
    }
    for round in 0..20 {
        let name = format!("user{round}");
        let id = stack.create_user(&name).await;
        let r = stack.http.get(stack.at(1, &format!("/v1/users/{id}"))).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "user round {round}");
        let session = stack.login(0, &name).await;
        assert_eq!(stack.session(1, &session).await, StatusCode::OK, "session round {round}");
    }
    // Once replica B's watermark has passed them, the same keys are judged by its
    // Bloom filter first: still no false "not found".
    let first_created = token::parse(&tokens[0]).unwrap().issued_at;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let old = token::generate(TokenKind::Access, first_created - chrono::Duration::seconds(1));
    eventually("replica B's filter covers the first tokens", || async {
        let before = stack.proxy_metric(1, r#"quantaid_bloom_rejections_total{reason="absent"}"#).await;
        let (_, body) = stack.introspect(1, &client, &old).await;
        body["active"] == false && stack.proxy_metric(1, r#"quantaid_bloom_rejections_total{reason="absent"}"#).await > before
    })
    .await;
    for token in &tokens {
        let (_, body) = stack.introspect(1, &client, token).await;
        assert_eq!(body["active"], true);
    }
}

/// Invariant 2: a revocation through A is seen through B the moment it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_one_replica_is_seen_at_once_on_another() {
    let stack = Stack::start(2).await;
    let client = stack.create_client(&["client_credentials", "password"], &["read", "users:read"]).await;
    let token = stack.issue(0, &client).await;
    for _ in 0..2 {
        assert_eq!(stack.introspect(1, &client, &token).await.1["active"], true);
        // cached on B
    }
    stack.revoke(0, &client, &token).await;
    assert_eq!(stack.introspect(1, &client, &token).await.1, json!({"active": false}));

    let id = stack.create_user("frank").await;
    let a = stack.login(0, "frank").await;
    let b = stack.login(0, "frank").await;
    let r = stack
        .http
        .post(stack.at(0, "/oauth/token"))
        .basic_auth(&client.0, Some(&client.1))
        .form(&[("grant_type", "password"), ("username", "frank"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let user_token = r.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(stack.session(1, &a).await, StatusCode::OK);
        assert_eq!(stack.session(1, &b).await, StatusCode::OK);
        assert_eq!(stack.introspect(1, &client, &user_token).await.1["active"], true);
    }
    // Logout of one session.
    let r = stack.http.post(stack.at(0, "/v1/auth/logout")).bearer_auth(&a).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(stack.session(1, &a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(stack.session(1, &b).await, StatusCode::OK);
    // Disabling the user: every session and token, and the cached record.
    let path = format!("/v1/users/{id}");
    assert_eq!(
        stack.http.get(stack.at(1, &path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json::<serde_json::Value>().await.unwrap()
            ["disabled"],
        false
    );
    let r = stack.http.patch(stack.at(0, &path)).bearer_auth(ADMIN_TOKEN).json(&json!({"disabled": true})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(stack.session(1, &b).await, StatusCode::UNAUTHORIZED);
    assert_eq!(stack.introspect(1, &client, &user_token).await.1["active"], false);
    let user: serde_json::Value = stack.http.get(stack.at(1, &path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(user["disabled"], true);
}

type RevokedAt = Arc<std::sync::Mutex<Option<Instant>>>;

/// `count` loops that introspect `token` for `period`, loop `i` through replica
/// `replica(i)`; each counts the lookups that started after `revoked_at` was set and
/// still said "active".
fn spawn_lookers(
    stack: &Arc<Stack>,
    client: &Arc<(String, String)>,
    token: &Arc<String>,
    count: usize,
    replica: impl Fn(usize) -> usize,
    period: Duration,
    revoked_at: &RevokedAt,
) -> Vec<tokio::task::JoinHandle<i32>> {
    (0..count)
        .map(|i| {
            let (stack, client, token, revoked_at, replica) =
                (stack.clone(), client.clone(), token.clone(), revoked_at.clone(), replica(i));
            tokio::spawn(async move {
                let deadline = Instant::now() + period;
                let mut late_actives = 0;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let (status, body) = stack.introspect(replica, &client, &token).await;
                    assert_eq!(status, StatusCode::OK);
                    let after_revoke = revoked_at.lock().unwrap().is_some_and(|t| started > t);
                    if after_revoke && body["active"] == true {
                        late_actives += 1;
                    }
                }
                late_actives
            })
        })
        .collect()
}

async fn late_actives(lookers: Vec<tokio::task::JoinHandle<i32>>) -> i32 {
    join_all(lookers).await.into_iter().map(|r| r.unwrap()).sum()
}

/// Invariant 2 under a race: lookups (with cache misses) run while the token is revoked;
/// no lookup that starts after the revocation returned may say "active".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_racing_cache_fills() {
    let stack = Arc::new(Stack::start(2).await);
    let client = Arc::new(stack.create_client(&["client_credentials"], &["read"]).await);
    for attempt in 0..5 {
        let token = Arc::new(stack.issue(0, &client).await);
        let key = quantaid_protocol::cache::token_key(&token);
        stack.introspect(1, &client, &token).await; // the client is known to B
        let revoked_at: RevokedAt = Arc::default();
        let stop_evicting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Keep evicting the entry so lookups keep missing and filling until the revoke.
        let evictor = {
            let (stack, stop, key) = (stack.clone(), stop_evicting.clone(), key.clone());
            tokio::spawn(async move {
                let mut r = stack.redis().await;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let _: () = redis::AsyncCommands::del(&mut r, &key).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let lookers = spawn_lookers(&stack, &client, &token, 16, |_| 1, Duration::from_millis(1500), &revoked_at);
        tokio::time::sleep(Duration::from_millis(400)).await;
        stop_evicting.store(true, std::sync::atomic::Ordering::SeqCst);
        evictor.await.unwrap();
        stack.revoke(0, &client, &token).await;
        *revoked_at.lock().unwrap() = Some(Instant::now());
        assert_eq!(late_actives(lookers).await, 0, "attempt {attempt}: 'active' after the revocation returned");
    }
}

/// Invariant 2 with the local tier: a key hot in both replicas' local tiers, looked up
/// without pause on both while it is revoked (a single token, then every credential of
/// a user through its marker, then after a Redis restart), is refused by every lookup
/// that started after the revocation returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_hot_keys_on_two_replicas_are_refused_once_their_revocation_returns() {
    let stack = Arc::new(Stack::start(2).await);
    let client = Arc::new(stack.create_client(&["client_credentials", "password"], &["read"]).await);
    let local_hits = || async {
        stack.proxy_metric(0, "quantaid_cache_local_hits_total").await + stack.proxy_metric(1, "quantaid_cache_local_hits_total").await
    };
    let user_token = |name: &'static str| {
        let (stack, client) = (stack.clone(), client.clone());
        async move {
            let id = stack.create_user(name).await;
            let r = stack
                .http
                .post(stack.at(0, "/oauth/token"))
                .basic_auth(&client.0, Some(&client.1))
                .form(&[("grant_type", "password"), ("username", name), ("password", PASSWORD)])
                .send()
                .await
                .unwrap();
            (r.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_string(), id)
        }
    };
    for (round, how) in ["revoke the token", "disable its user", "revoke it after Redis restarted"].into_iter().enumerate() {
        let (token, user) = match round {
            1 => {
                let (token, id) = user_token("local-tier-user").await;
                (token, Some(id))
            }
            _ => (stack.issue(0, &client).await, None),
        };
        let token = Arc::new(token);
        for replica in [0, 1] {
            for _ in 0..3 {
                assert_eq!(stack.introspect(replica, &client, &token).await.1["active"], true, "{how}: warm-up on {replica}");
            }
        }
        if round == 2 {
            stack.redis.kill();
            stack.redis.restart().unwrap();
        }
        let hits_before = local_hits().await;
        let revoked_at: RevokedAt = Arc::default();
        let lookers = spawn_lookers(&stack, &client, &token, 8, |i| i % 2, Duration::from_millis(1200), &revoked_at);
        tokio::time::sleep(Duration::from_millis(400)).await;
        match user {
            Some(id) => {
                let r = stack
                    .http
                    .patch(stack.at(0, &format!("/v1/users/{id}")))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"disabled": true}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }
            None => stack.revoke(0, &client, &token).await,
        }
        *revoked_at.lock().unwrap() = Some(Instant::now());
        assert_eq!(late_actives(lookers).await, 0, "{how}: 'active' after the revocation returned");
        // The test means something only if the local tier answered the lookups before.
        assert!(local_hits().await > hits_before, "{how}: no lookup was answered from the local tier");
    }
}

/// The local tier's fence: a replica whose Redis connection stalls (open, but nothing
/// arrives: neither the invalidation nor any reply) must not answer from its local copy
/// once a revocation has returned elsewhere; it asks the backend instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_copy_is_not_served_while_its_invalidations_cannot_arrive() {
    use quantaid_proxy::config::{REDIS_HOST, REDIS_TIMEOUT_MS};
    let mut stack = Stack::start(1).await;
    let link = quantaid_testkit::Link::start(stack.redis.port()).unwrap();
    let through_link = format!("127.0.0.1:{}", link.port());
    let stalled = stack.spawn_proxy(stack.backend_addr(), &[(REDIS_HOST, &through_link), (REDIS_TIMEOUT_MS, "200")]).await;
    stack.proxies.push(stalled);
    let client = stack.create_client(&["client_credentials"], &["read"]).await;
    let token = stack.issue(0, &client).await;
    for _ in 0..3 {
        assert_eq!(stack.introspect(1, &client, &token).await.1["active"], true);
    }
    assert!(stack.proxy_metric(1, "quantaid_cache_local_hits_total").await > 0.0, "the copy is in replica 1's local tier");
    link.stall();
    stack.revoke(0, &client, &token).await;
    let (status, body) = stack.introspect(1, &client, &token).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"active": false})), "a local copy answered past its revocation");
    link.resume();
}

/// With the local tier off (`QUANTAID_CACHE_LOCAL_BYTES=0`) every hit is a Redis read,
/// and a Redis restart is still followed without the breaker's help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_tier_can_be_turned_off() {
    use quantaid_proxy::config::LOCAL_CACHE_BYTES;
    let mut stack = Stack::start(0).await;
    let plain = stack.spawn_proxy(stack.backend_addr(), &[(LOCAL_CACHE_BYTES, "0")]).await;
    stack.proxies.push(plain);
    let client = stack.create_client(&["client_credentials"], &["read"]).await;
    let token = stack.issue(0, &client).await;
    for _ in 0..5 {
        assert_eq!(stack.introspect(0, &client, &token).await.1["active"], true);
    }
    assert!(stack.proxy_metric(0, r#"quantaid_cache_hits_total{kind="token"}"#).await >= 4.0);
    assert_eq!(stack.proxy_metric(0, "quantaid_cache_local_hits_total").await, 0.0);
    stack.redis.kill();
    stack.redis.restart().unwrap();
    let hits = stack.proxy_metric(0, r#"quantaid_cache_hits_total{kind="token"}"#).await;
    eventually("hits resume after the restart", || async {
        stack.introspect(0, &client, &token).await;
        stack.proxy_metric(0, r#"quantaid_cache_hits_total{kind="token"}"#).await > hits
    })
    .await;
    assert_eq!(stack.proxy_metric(0, "quantaid_cache_fallback_total").await, 0.0, "the closed connection was noticed before a call failed");
    stack.revoke(0, &client, &token).await;
    assert_eq!(stack.introspect(0, &client, &token).await.1, json!({"active": false}));
}

/// Invariant 5: Redis killed under load fails nothing; when it returns, hits resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load() {
    let stack = Arc::new(Stack::start(1).await);
    stack.create_user("gina").await;
    let session = Arc::new(stack.login(0, "gina").await);
    let client = Arc::new(stack.create_client(&["client_credentials"], &["read"]).await);
    let token = Arc::new(stack.issue(0, &client).await);
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (stack, session, client, token) = (stack.clone(), session.clone(), client.clone(), token.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_millis(3000);
                let (mut ok, mut failed) = (0, 0);
                while Instant::now() < deadline {
                    let good = if i % 2 == 0 {
                        stack.session(0, &session).await == StatusCode::OK
                    } else {
                        stack.introspect(0, &client, &token).await.1["active"] == true
                    };
                    if good {
                        ok += 1
                    } else {
                        failed += 1
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stack.redis.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stack.redis.restart().unwrap();
    let results: Vec<(i32, i32)> = join_all(workers).await.into_iter().map(|r| r.unwrap()).collect();
    let failed: i32 = results.iter().map(|r| r.1).sum();
    let ok: i32 = results.iter().map(|r| r.0).sum();
    assert_eq!(failed, 0, "{ok} ok, {failed} failed");
    assert!(stack.proxy_metric(0, "quantaid_cache_fallback_total").await > 0.0, "the outage was noticed");
    let hits = stack.proxy_metric(0, r#"quantaid_cache_hits_total{kind="session"}"#).await;
    eventually("hits resume after Redis returns", || async {
        stack.session(0, &session).await;
        stack.proxy_metric(0, r#"quantaid_cache_hits_total{kind="session"}"#).await > hits
    })
    .await;
    eventually("redis_up returns to 1", || async { stack.proxy_metric(0, "quantaid_redis_up").await == 1.0 }).await;
}

/// Invariant 6: a hundred concurrent misses for one key cost one backend call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_backend_call() {
    let stack = Stack::start(1).await;
    stack.create_user("hank").await;
    let session = stack.login(0, "hank").await;
    let calls = r#"quantaid_http_requests_total{method="GET",path="/v1/auth/session",status="200"}"#;
    // Open the connections first, so that the 100 lookups really arrive together and the
    // last of them miss Redis just as the first one's backend call finishes.
    let url = stack.at(0, "/health");
    join_all((0..100).map(|_| stack.http.get(&url).send())).await;
    let before = stack.backend_metric(calls).await;
    let statuses = join_all((0..100).map(|_| stack.session(0, &session))).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert_eq!(stack.backend_metric(calls).await - before, 1.0);
}

/// Invariant 7: with the backend gone, uncached lookups and proxied calls say 503 with
/// Retry-After, never 401; cached answers still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_503_never_401() {
    let stack = Stack::start(1).await;
    stack.create_user("ivy").await;
    let cached = stack.login(0, "ivy").await;
    assert_eq!(stack.session(0, &cached).await, StatusCode::OK);
    let uncached = stack.login(0, "ivy").await;
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], quantaid_testkit::free_port()));
    let orphan = stack.spawn_proxy(dead, &[]).await;

    let r = stack.http.get(format!("{}/v1/auth/session", orphan.url)).bearer_auth(&uncached).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "temporarily_unavailable");
    let r = stack
        .http
        .post(format!("{}/v1/auth/login", orphan.url))
        .json(&json!({"username": "ivy", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(stack.http.get(format!("{}/ready", orphan.url)).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stack.http.get(format!("{}/health", orphan.url)).send().await.unwrap().status(), StatusCode::OK);
    // What Redis already knows is still answered.
    let r = stack.http.get(format!("{}/v1/auth/session", orphan.url)).bearer_auth(&cached).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Invariant 7 for introspection: remembered client credentials that outlive
/// `QUANTAID_CACHE_CLIENT_TTL_SECS` while the backend cannot answer keep the cached
/// answers coming (the client's marker is still checked on every read), and a client
/// disabled meanwhile is still refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_clients_outlive_their_ttl_while_the_backend_is_unreachable() {
    let stack = Stack::start(0).await;
    let link = quantaid_testkit::Link::start(stack.backend_addr().port()).unwrap();
    let behind_link = std::net::SocketAddr::from(([127, 0, 0, 1], link.port()));
    let proxy = stack.spawn_proxy(behind_link, &[("QUANTAID_CACHE_CLIENT_TTL_SECS", "1"), ("QUANTAID_LOOKUP_TIMEOUT_MS", "500")]).await;
    let introspect = async |client: &(String, String), token: &str| {
        let r = stack.http.post(format!("{}/oauth/introspect", proxy.url)).basic_auth(&client.0, Some(&client.1)).form(&[("token", token)]);
        let r = r.send().await.unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap_or_default())
    };
    let new_client = async || quantaid_test_stack::api::create_client(&stack.http, &proxy.url, &["client_credentials"], &["read"]).await;
    let (kept, disabled) = (new_client().await, new_client().await);
    let mut tokens = Vec::new();
    for client in [&kept, &disabled] {
        let r = stack.http.post(format!("{}/oauth/token", proxy.url)).basic_auth(&client.0, Some(&client.1));
        let r = r.form(&[("grant_type", "client_credentials")]).send().await.unwrap();
        let token = r.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
        for _ in 0..2 {
            assert_eq!(introspect(client, &token).await.1["active"], true);
        }
        tokens.push(token);
    }

    link.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = stack
        .http
        .patch(stack.backend.url(&format!("/v1/clients/{}", disabled.0)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for _ in 0..3 {
        let (status, body) = introspect(&kept, &tokens[0]).await;
        assert_eq!((status, body["active"].as_bool()), (StatusCode::OK, Some(true)), "credentials past their TTL, backend unreachable");
    }
    let (status, body) = introspect(&disabled, &tokens[1]).await;
    assert_ne!(body["active"], true, "a client disabled meanwhile is refused at once ({status})");

    // Back: the credentials are verified again in the background, and still work.
    link.restore();
    for _ in 0..3 {
        assert_eq!(introspect(&kept, &tokens[0]).await.1["active"], true);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM: the proxy drains and exits cleanly.
#[tokio::test]
async fn sigterm_stops_the_proxy_gracefully() {
    let stack = Stack::start(0).await;
    let mut proxy = stack.spawn_proxy(stack.backend_addr(), &[("QUANTAID_PROXY_SHUTDOWN_GRACE_SECS", "1")]).await;
    proxy.child.signal(libc::SIGTERM);
    let status = tokio::task::spawn_blocking(move || proxy.child.0.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}
