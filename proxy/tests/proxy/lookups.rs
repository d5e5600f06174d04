//! Hits, misses, fills, TTLs, forward-auth, and bad input answered without lookups.

use std::time::Duration;

use quantaid_protocol::cache;
use quantaid_protocol::token::{self, TokenKind};
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::stack::*;

async fn pttl(stack: &Stack, key: &str) -> i64 {
    stack.redis().await.pttl(key).await.unwrap()
}

#[tokio::test]
async fn sessions_miss_fill_then_hit_with_bounded_ttl() {
    let stack = Stack::start(1).await;
    stack.create_user("alice").await;
    let session = stack.login(0, "alice").await;
    let before = stack.backend_metric(r#"quantaid_http_requests_total{method="GET",path="/v1/auth/session",status="200"}"#).await;

    let r = stack.http.get(stack.at(0, "/v1/auth/session")).bearer_auth(&session).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let first: Value = r.json().await.unwrap();
    let r = stack.http.get(stack.at(0, "/v1/auth/session")).header("cookie", format!("quantaid_session={session}")).send().await.unwrap();
    let second: Value = r.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first["mfa_verified"], false);
    let after = stack.backend_metric(r#"quantaid_http_requests_total{method="GET",path="/v1/auth/session",status="200"}"#).await;
    assert_eq!(after - before, 1.0, "one miss, then a hit");
    assert_eq!(stack.proxy_metric(0, r#"quantaid_cache_hits_total{kind="session"}"#).await, 1.0);
    assert_eq!(stack.proxy_metric(0, r#"quantaid_cache_misses_total{kind="session"}"#).await, 1.0);

    // 30 min ±10%, and the key is a digest: the token appears nowhere in Redis.
    let key = cache::session_key(&session);
    let ttl = pttl(&stack, &key).await;
    assert!((1_620_000 - 5_000..=1_980_000).contains(&ttl), "session TTL {ttl} ms");
    let mut r = stack.redis().await;
    let keys: Vec<String> = r.keys("*").await.unwrap();
    for k in &keys {
        let v: String = r.get(k).await.unwrap_or_default();
        assert!(!k.contains(&session) && !v.contains(&session), "secret in Redis under {k}");
    }
}

#[tokio::test]
async fn tokens_and_users_are_cached_within_their_lifetimes() {
    let stack = Stack::start(1).await;
    let client = stack.create_client(&["client_credentials"], &["read", "users:read"]).await;
    let token = stack.issue(0, &client).await;
    for _ in 0..3 {
        let (status, body) = stack.introspect(0, &client, &token).await;
        assert_eq!((status, body["active"].as_bool()), (StatusCode::OK, Some(true)));
    }
    assert_eq!(stack.proxy_metric(0, r#"quantaid_cache_hits_total{kind="token"}"#).await, 2.0);
    let ttl = pttl(&stack, &cache::token_key(&token)).await;
    assert!((3_600_000 * 9 / 10 - 5_000..=3_600_000).contains(&ttl), "token TTL {ttl} ms: its lifetime less jitter");

    let id = stack.create_user("bob").await;
    let path = format!("/v1/users/{id}");
    for _ in 0..2 {
        let r = stack.http.get(stack.at(0, &path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(stack.proxy_metric(0, r#"quantaid_cache_hits_total{kind="user"}"#).await, 1.0);
    let ttl = pttl(&stack, &format!("user:{id}")).await;
    assert!((270_000 - 5_000..=330_000).contains(&ttl), "user TTL {ttl} ms");

    // A change through any replica is seen at once.
    let r = stack.http.patch(stack.at(0, &path)).bearer_auth(ADMIN_TOKEN).json(&json!({"email": "b2@example.com"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let user: Value = stack.http.get(stack.at(0, &path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(user["email"], "b2@example.com");

    // The caller's credential is checked too: a users:read token may read, a session only itself.
    let reader = stack.issue(0, &client).await;
    assert_eq!(stack.http.get(stack.at(0, &path)).bearer_auth(&reader).send().await.unwrap().status(), StatusCode::OK);
    stack.create_user("carol").await;
    let carol = stack.login(0, "carol").await;
    assert_eq!(stack.http.get(stack.at(0, &path)).bearer_auth(&carol).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(stack.http.get(stack.at(0, &path)).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn entries_expire() {
    let stack = Stack::start(0).await;
    let short = stack.spawn_proxy(stack.backend_addr(), &[("QUANTAID_CACHE_USER_TTL_SECS", "1")]).await;
    let id = stack.backend.create_user("dave").await;
    let url = format!("{}/v1/users/{id}", short.url);
    let backend_reads = r#"quantaid_http_requests_total{method="GET",path="/v1/users/{id}",status="200"}"#;
    stack.http.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    stack.http.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(stack.backend_metric(backend_reads).await, 1.0);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    stack.http.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(stack.backend_metric(backend_reads).await, 2.0, "the expired entry was fetched again");
}

#[tokio::test]
async fn forward_auth_check() {
    let stack = Stack::start(1).await;
    let id = stack.create_user("erin").await;
    let session = stack.login(0, "erin").await;
    let check = |bearer: Option<String>| {
        let r = stack.http.get(stack.at(0, "/v1/auth/check"));
        let r = match bearer {
            Some(b) => r.bearer_auth(b),
            None => r,
        };
        r.send()
    };
    let r = check(Some(session.clone())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-quantaid-user-id"], id.as_str());

    let client = stack.create_client(&["client_credentials"], &["read", "write"]).await;
    let token = stack.issue(0, &client).await;
    let r = check(Some(token)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-quantaid-client-id"], client.0.as_str());
    assert_eq!(r.headers()["x-quantaid-scopes"], "read write");
    assert_eq!(r.headers()["x-quantaid-user-id"], "");

    for bad in [None, Some("garbage".to_string()), Some(client.1.clone())] {
        let r = check(bad).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"quantaid\"");
    }
}

#[tokio::test]
async fn malformed_keys_and_bad_requests_cost_no_lookup() {
    let stack = Stack::start(1).await;
    let client = stack.create_client(&["client_credentials"], &["read"]).await;
    let token = stack.issue(0, &client).await;
    stack.introspect(0, &client, &token).await; // the client is now known to this replica
    let before = backend_requests(&stack).await;
    let misses = stack.proxy_metric(0, r#"quantaid_cache_misses_total{kind="token"}"#).await;

    let old_but_wellformed = token::generate(TokenKind::Session, chrono::Utc::now() - chrono::Duration::hours(1));
    for bad in ["", "garbage", "qst_AAAA", &token.replace("qat_", "qst_")] {
        assert_eq!(stack.session(0, bad).await, StatusCode::UNAUTHORIZED, "{bad:?}");
    }
    for bad in ["garbage", "qat_", &format!("{token}x")] {
        let (status, body) = stack.introspect(0, &client, bad).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"active": false})));
    }
    for id in ["not-a-uuid", "6f1b2a3c-1111-4222-8333-444455556666" /* v4: never ours */] {
        let r = stack.http.get(stack.at(0, &format!("/v1/users/{id}"))).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let form = "application/x-www-form-urlencoded";
    let bad_requests: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("application/json", b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (form, vec![b'a'; 100_000], StatusCode::PAYLOAD_TOO_LARGE),
        (form, b"token=\xff".to_vec(), StatusCode::BAD_REQUEST),
        (form, b"token=a&token=b".to_vec(), StatusCode::BAD_REQUEST),
        (form, b"nothing=here".to_vec(), StatusCode::BAD_REQUEST),
    ];
    for (ct, body, expected) in bad_requests {
        let r = stack
            .http
            .post(stack.at(0, "/oauth/introspect"))
            .basic_auth(&client.0, Some(&client.1))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"], "invalid_request");
    }
    let r = stack.http.get(stack.at(0, "/internal/v1/bloom-snapshot")).bearer_auth(INTERNAL_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "internal endpoints are not reachable through the proxy");

    assert_eq!(backend_requests(&stack).await, before, "no request reached the backend");
    assert_eq!(stack.proxy_metric(0, r#"quantaid_cache_misses_total{kind="token"}"#).await, misses, "nor Redis");
    // The old, well-formed but unknown session is judged by the Bloom filter alone.
    eventually("the Bloom filter is built", || async {
        stack.session(0, &old_but_wellformed).await == StatusCode::UNAUTHORIZED
            && stack.proxy_metric(0, r#"quantaid_bloom_rejections_total{reason="absent"}"#).await >= 1.0
    })
    .await;
    assert_eq!(backend_requests(&stack).await, before);
}
