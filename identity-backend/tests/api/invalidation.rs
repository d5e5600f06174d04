//! Revocations reach the proxies' Redis before the revoking call returns, and survive a
//! Redis outage through the outbox.

use std::time::Duration;

use quantaid_backend::config;
use quantaid_protocol::cache;
use quantaid_testkit::Redis;
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::json;

use quantaid_test_stack::*;

async fn app_with_redis(redis: &Redis) -> TestApp {
    TestApp::with(&[(config::REDIS_HOST, &format!("127.0.0.1:{}", redis.port()))]).await
}

async fn redis_conn(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test]
async fn revocations_write_markers_before_returning() {
    let redis = Redis::start().unwrap();
    let app = app_with_redis(&redis).await;
    let mut r = redis_conn(&redis).await;
    let id = app.create_user("alice").await;

    // Logout: a tombstone on exactly that session.
    let session = app.login("alice", PASSWORD).await;
    app.request(Method::POST, "/v1/auth/logout", Some(&session)).send().await.unwrap();
    let v: Option<String> = r.get(cache::session_key(&session)).await.unwrap();
    assert_eq!(v.as_deref(), Some(cache::TOMBSTONE));
    let ttl: i64 = r.pttl(cache::session_key(&session)).await.unwrap();
    assert!(ttl > 3_600_000, "markers outlive any cache entry: {ttl}");

    // Token revocation: tombstones on the access and the refresh token.
    let client = app.create_client(&["password", "refresh_token"], &["read"]).await;
    let (_, t) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    let (access, refresh) = (t["access_token"].as_str().unwrap(), t["refresh_token"].as_str().unwrap());
    app.post_form("/oauth/revoke", Some((&client.0, &client.1)), &[("token", access)]).await;
    for token in [access, refresh] {
        let v: Option<String> = r.get(cache::token_key(token)).await.unwrap();
        assert_eq!(v.as_deref(), Some(cache::TOMBSTONE));
    }

    // Logout-all: one marker for the user, covering every credential created so far.
    let before = app.login("alice", PASSWORD).await;
    let created_ms = quantaid_protocol::token::parse(&before).unwrap().issued_at.timestamp_millis();
    app.request(Method::POST, "/v1/auth/logout-all", Some(&before)).send().await.unwrap();
    let marker: i64 = r.get(cache::revoked_before_key(&id)).await.unwrap();
    assert!(marker >= created_ms);

    // A user change bumps the user's version.
    let v0: Option<i64> = r.get(cache::user_version_key(&id)).await.unwrap();
    let resp = app
        .request(Method::PATCH, &format!("/v1/users/{id}"), Some(ADMIN_TOKEN))
        .json(&json!({"email": "new@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v1: i64 = r.get(cache::user_version_key(&id)).await.unwrap();
    assert_eq!(v1, v0.unwrap_or(0) + 1);
    assert_eq!(app.metric("quantaid_cache_invalidations_total{result=\"deferred\"}").await, 0.0);
}

#[tokio::test]
async fn a_redis_outage_defers_invalidations_until_it_returns() {
    let redis = Redis::start().unwrap();
    let app = app_with_redis(&redis).await;
    app.create_user("alice").await;
    let session = app.login("alice", PASSWORD).await;

    redis.kill();
    // The revocation is committed (Postgres is the system of record), but it does not
    // answer 2xx while its marker is not in Redis: a proxy that still reaches Redis
    // would keep serving the session (docs/caching.md, "When the markers cannot be
    // written").
    let r = app.request(Method::POST, "/v1/auth/logout", Some(&session)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "temporarily_unavailable");
    assert_eq!(app.get("/v1/auth/session", Some(&session)).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.metric("quantaid_cache_invalidations_total{result=\"deferred\"}").await, 1.0);
    let pg = app.pg().await;
    let pending: i64 = pg.query_one("SELECT count(*) FROM cache_invalidations", &[]).await.unwrap().get(0);
    assert_eq!(pending, 1);

    redis.restart().unwrap();
    let mut r = redis_conn(&redis).await;
    let mut tombstone = None;
    for _ in 0..100 {
        tombstone = r.get::<_, Option<String>>(cache::session_key(&session)).await.unwrap();
        if tombstone.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tombstone.as_deref(), Some(cache::TOMBSTONE), "the outbox drains once Redis is back");
    let pending: i64 = pg.query_one("SELECT count(*) FROM cache_invalidations", &[]).await.unwrap().get(0);
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn bloom_snapshot_lists_live_keys_only_and_needs_the_internal_token() {
    let app = TestApp::start().await;
    let id = app.create_user("alice").await;
    let live = app.login("alice", PASSWORD).await;
    let dead = app.login("alice", PASSWORD).await;
    app.request(Method::POST, "/v1/auth/logout", Some(&dead)).send().await.unwrap();

    assert_eq!(app.get("/internal/v1/bloom-snapshot", None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/internal/v1/bloom-snapshot", Some(ADMIN_TOKEN)).await.status(), StatusCode::UNAUTHORIZED);
    let r = app.get("/internal/v1/bloom-snapshot", Some(INTERNAL_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.bytes().await.unwrap();
    let watermark = i64::from_be_bytes(body[..8].try_into().unwrap());
    let now = chrono::Utc::now().timestamp_millis();
    assert!(watermark < now - 30_000 && watermark > now - 120_000, "watermark trails the snapshot");
    let mut records = Vec::new();
    let mut rest = &body[8..];
    while !rest.is_empty() {
        let (kind, len) = (rest[0], rest[1] as usize);
        records.push((kind, rest[2..2 + len].to_vec()));
        rest = &rest[2 + len..];
    }
    let digest = |t: &str| quantaid_backend::security::token::digest(t);
    assert!(records.contains(&(1, digest(&live))));
    assert!(!records.contains(&(1, digest(&dead))), "revoked sessions are left out");
    assert!(records.contains(&(3, uuid::Uuid::parse_str(&id).unwrap().as_bytes().to_vec())));

    // The incremental form: only what was created since.
    let r = app.get(&format!("/internal/v1/bloom-snapshot?since_ms={}", now + 60_000), Some(INTERNAL_TOKEN)).await;
    assert_eq!(r.bytes().await.unwrap().len(), 8, "nothing created in the future");

    // Introspection for the proxy, without client authentication.
    let client = app.create_client(&["client_credentials"], &["read"]).await;
    let (_, t) = app.token(&client, &[("grant_type", "client_credentials")]).await;
    let r = app
        .http
        .post(app.url("/internal/v1/introspect"))
        .bearer_auth(INTERNAL_TOKEN)
        .form(&[("token", t["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    let (status, info) = json_of(r).await;
    assert_eq!((status, info["active"].as_bool()), (StatusCode::OK, Some(true)));
    let r = app.http.post(app.url("/internal/v1/introspect")).form(&[("token", "x")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// A revocation whose caller goes away (a client that disconnects, a proxy that gives up
/// at its timeout) after the revocation was committed still publishes its marker: a
/// cancelled handler would leave the credential revoked in PostgreSQL and "active" in
/// every proxy's cache, and a retry would find nothing left to revoke and answer 200.
#[tokio::test]
async fn a_revocation_abandoned_by_its_caller_still_publishes_its_marker() {
    let redis = Redis::start().unwrap();
    let app = app_with_redis(&redis).await;
    let mut r = redis_conn(&redis).await;
    app.create_user("alice").await;
    let client = app.create_client(&["password"], &["read"]).await;
    let (_, t) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    let access = t["access_token"].as_str().unwrap().to_string();

    // Hold the publication up after the revocation's UPDATE: publishing reads the outbox first.
    let mut pg = app.pg().await;
    let lock = pg.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE cache_invalidations IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let abandoned = app
        .http
        .post(app.url("/oauth/revoke"))
        .basic_auth(&client.0, Some(&client.1))
        .form(&[("token", access.as_str())])
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(abandoned.is_err(), "the caller gave up while the marker was held up");
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.commit().await.unwrap();

    let mut marker = None;
    for _ in 0..50 {
        marker = r.get::<_, Option<String>>(cache::token_key(&access)).await.unwrap();
        if marker.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(marker.as_deref(), Some(cache::TOMBSTONE), "the abandoned revocation published its tombstone");
}

/// Waits until `replica` has a live link to its primary and has caught up.
async fn replica_in_sync(replica: &Redis) {
    let mut r = redis_conn(replica).await;
    for _ in 0..100 {
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut r).await.unwrap();
        if info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replica did not catch up");
}

/// With QUANTAID_REDIS_WAIT_REPLICAS (the default under Sentinel), a revocation answers
/// 2xx only once a replica holds its marker too, so that a failover to that replica
/// cannot lose it (docs/caching.md). With the replica down the change is committed and
/// its marker is on the primary, but the call answers 503 + Retry-After; once the
/// replica is back, the same call answers 2xx.
#[tokio::test]
async fn a_revocation_answers_2xx_only_once_a_replica_holds_its_marker() {
    let primary = Redis::start().unwrap();
    let replica = Redis::start_replica_of(&primary).unwrap();
    replica_in_sync(&replica).await;
    let app = TestApp::with(&[(config::REDIS_HOST, &format!("127.0.0.1:{}", primary.port())), (config::REDIS_WAIT_REPLICAS, "1")]).await;
    let mut on_replica = redis_conn(&replica).await;
    app.create_user("alice").await;

    let session = app.login("alice", PASSWORD).await;
    let r = app.request(Method::POST, "/v1/auth/logout", Some(&session)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let v: Option<String> = on_replica.get(cache::session_key(&session)).await.unwrap();
    assert_eq!(v.as_deref(), Some(cache::TOMBSTONE), "acknowledged means the replica has it");

    replica.kill();
    let session = app.login("alice", PASSWORD).await;
    let r = app.request(Method::POST, "/v1/auth/logout", Some(&session)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "no replica acknowledged the marker");
    assert!(r.headers().contains_key("retry-after"));
    let mut on_primary = redis_conn(&primary).await;
    let v: Option<String> = on_primary.get(cache::session_key(&session)).await.unwrap();
    assert_eq!(v.as_deref(), Some(cache::TOMBSTONE), "the marker is on the primary meanwhile");
    assert_eq!(app.get("/v1/auth/session", Some(&session)).await.status(), StatusCode::UNAUTHORIZED, "the logout is committed");

    replica.restart().unwrap();
    replica_in_sync(&replica).await;
    let session = app.login("alice", PASSWORD).await;
    let r = app.request(Method::POST, "/v1/auth/logout", Some(&session)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "a replica is back");
}
