//! Invariant 2 under Redis faults (docs/caching.md, "When the markers cannot be
//! written"): once a revocation has answered 2xx, no replica serves the entry it
//! invalidated — right after Redis restarts, and while only the backend has lost Redis.

use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::stack::*;

/// Looks `what` up through `replica` until the answer came from the cache (the hit
/// counter of `kind` moved), so the next answer would be served from Redis.
async fn cached(stack: &Stack, replica: usize, kind: &str, mut lookup: impl AsyncFnMut() -> bool) {
    let sample = format!("quantaid_cache_hits_total{{kind=\"{kind}\"}}");
    eventually(&format!("a cached {kind} on replica {replica}"), async || {
        let before = stack.proxy_metric(replica, &sample).await;
        lookup().await && stack.proxy_metric(replica, &sample).await > before
    })
    .await;
}

async fn revoke(stack: &Stack, replica: usize, client: &(String, String), token: &str) -> Response {
    stack
        .http
        .post(stack.at(replica, "/oauth/revoke"))
        .basic_auth(&client.0, Some(&client.1))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

async fn logout(stack: &Stack, replica: usize, session: &str) -> Response {
    stack.http.post(stack.at(replica, "/v1/auth/logout")).bearer_auth(session).send().await.unwrap()
}

async fn disable(stack: &Stack, replica: usize, user_id: &str) -> Response {
    stack
        .http
        .patch(stack.at(replica, &format!("/v1/users/{user_id}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap()
}

/// A revocation that did not claim success must say so the retryable way.
fn assert_retryable(r: &Response, what: &str) {
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}: the markers could not be written");
    assert!(r.headers().contains_key("retry-after"), "{what}: 503 without Retry-After");
}

/// The defect this guards against (docs/caching.md, "When the markers cannot be written"): the backend's Redis connection died with the old Redis and was
/// only found dead by the revocation's own write, which then went to the outbox while
/// both replicas kept serving the revoked credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_hold_right_after_redis_restarts() {
    let stack = Stack::start(2).await;
    let client = stack.create_client(&["client_credentials"], &["read"]).await;
    stack.create_user("ivy").await;
    // The backend's connection to Redis exists before the first restart.
    let warm = stack.issue(0, &client).await;
    assert_eq!(revoke(&stack, 0, &client, &warm).await.status(), StatusCode::OK);
    for round in 0..5 {
        let token = stack.issue(0, &client).await;
        let session = stack.login(0, "ivy").await;
        stack.redis.kill();
        stack.redis.restart().unwrap();
        for replica in 0..2 {
            cached(&stack, replica, "token", || async { stack.introspect(replica, &client, &token).await.1["active"] == true }).await;
            cached(&stack, replica, "session", || async { stack.session(replica, &session).await == StatusCode::OK }).await;
        }
        assert_eq!(revoke(&stack, 0, &client, &token).await.status(), StatusCode::OK, "round {round}");
        for replica in 0..2 {
            let (_, body) = stack.introspect(replica, &client, &token).await;
            assert_eq!(body, json!({"active": false}), "round {round}: revoked token active on replica {replica}");
        }
        assert_eq!(logout(&stack, 0, &session).await.status(), StatusCode::NO_CONTENT, "round {round}");
        for replica in 0..2 {
            assert_eq!(
                stack.session(replica, &session).await,
                StatusCode::UNAUTHORIZED,
                "round {round}: logged-out session valid on replica {replica}"
            );
        }
    }
}

/// Only the backend loses Redis; the proxies keep theirs and keep serving their entries.
/// A revocation whose markers cannot be written answers 503 + Retry-After (committed, the
/// outbox retrying); its retry answers 2xx once the markers are in, and then no replica
/// serves the credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_the_backend_cannot_publish_is_not_acknowledged() {
    let stack = Stack::start_with_backend_link(2).await;
    let link = stack.backend_link.as_ref().unwrap();
    let client = stack.create_client(&["client_credentials", "password"], &["read"]).await;
    let user_id = stack.create_user("jack").await;
    let warm = stack.issue(0, &client).await;
    assert_eq!(revoke(&stack, 0, &client, &warm).await.status(), StatusCode::OK);

    let token = stack.issue(0, &client).await;
    let session = stack.login(0, "jack").await;
    let kept = stack.login(0, "jack").await;
    for replica in 0..2 {
        cached(&stack, replica, "token", || async { stack.introspect(replica, &client, &token).await.1["active"] == true }).await;
        cached(&stack, replica, "session", || async { stack.session(replica, &session).await == StatusCode::OK }).await;
        cached(&stack, replica, "session", || async { stack.session(replica, &kept).await == StatusCode::OK }).await;
    }

    link.cut();
    assert_retryable(&revoke(&stack, 0, &client, &token).await, "revoke");
    assert_retryable(&logout(&stack, 0, &session).await, "logout");
    assert_retryable(&disable(&stack, 0, &user_id).await, "disable");
    // The retry, still cut off, does not claim success either.
    assert_retryable(&revoke(&stack, 1, &client, &token).await, "revoke retried while cut off");

    link.restore();
    let r = revoke(&stack, 0, &client, &token).await;
    assert_eq!(r.status(), StatusCode::OK, "the retry once Redis is back");
    for replica in 0..2 {
        assert_eq!(stack.introspect(replica, &client, &token).await.1, json!({"active": false}), "replica {replica}");
    }
    // Disabling again is idempotent and, answering 200, guarantees the user's marker.
    assert_eq!(disable(&stack, 1, &user_id).await.status(), StatusCode::OK);
    for replica in 0..2 {
        assert_eq!(stack.session(replica, &kept).await, StatusCode::UNAUTHORIZED, "disabled user's session on {replica}");
        assert_eq!(stack.session(replica, &session).await, StatusCode::UNAUTHORIZED, "logged-out session on {replica}");
    }
}

/// The user-wide revocations (password change, logout-all, delete), while only the
/// backend has lost Redis: none answers 2xx, each says 503 + Retry-After, and once
/// Redis is reachable again the outbox makes every replica refuse the user's sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_wide_revocations_the_backend_cannot_publish_are_not_acknowledged() {
    let stack = Stack::start_with_backend_link(2).await;
    let link = stack.backend_link.as_ref().unwrap();
    let mut sessions = Vec::new();
    let mut users = Vec::new();
    for name in ["kate", "liam", "mia"] {
        users.push(stack.create_user(name).await);
        let session = stack.login(0, name).await;
        for replica in 0..2 {
            cached(&stack, replica, "session", || async { stack.session(replica, &session).await == StatusCode::OK }).await;
        }
        sessions.push(session);
    }

    link.cut();
    let password = stack
        .http
        .post(stack.at(0, &format!("/v1/users/{}/password", users[0])))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"new_password": "another long passphrase 42"}))
        .send()
        .await
        .unwrap();
    assert_retryable(&password, "password change");
    let everywhere = stack.http.post(stack.at(1, "/v1/auth/logout-all")).bearer_auth(&sessions[1]).send().await.unwrap();
    assert_retryable(&everywhere, "logout-all");
    let delete = stack.http.delete(stack.at(0, &format!("/v1/users/{}", users[2]))).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_retryable(&delete, "delete");

    link.restore();
    for (session, what) in sessions.iter().zip(["password change", "logout-all", "delete"]) {
        for replica in 0..2 {
            eventually(&format!("{what}: the session is refused on replica {replica}"), async || {
                stack.session(replica, session).await == StatusCode::UNAUTHORIZED
            })
            .await;
        }
    }
}
