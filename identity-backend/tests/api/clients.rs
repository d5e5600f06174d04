//! OAuth client lifecycle (disable, enable, secret rotation, delete; audited, and every
//! token of the client ends at once) and the introspection scope rule.

use quantaid_backend::config;
use quantaid_protocol::cache;
use quantaid_protocol::introspection::INTROSPECT_RIGHT;
use quantaid_testkit::Redis;
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use quantaid_test_stack::*;

async fn issue(app: &TestApp, client: &(String, String)) -> String {
    let (status, t) = app.token(client, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    t["access_token"].as_str().unwrap().to_string()
}

async fn audited(app: &TestApp, action: &str) -> Vec<Value> {
    let (status, body) = json_of(app.get(&format!("/v1/audit-logs?action={action}"), Some(ADMIN_TOKEN)).await).await;
    assert_eq!(status, StatusCode::OK);
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn client_lifecycle_disable_rotate_delete() {
    let redis = Redis::start().unwrap();
    let app = TestApp::with(&[(config::REDIS_HOST, &format!("127.0.0.1:{}", redis.port()))]).await;
    let mut kv = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let client = app.create_client(&["client_credentials"], &["read"]).await;
    let path = format!("/v1/clients/{}", client.0);
    let marker_key = cache::client_revoked_before_key(&client.0);

    // Admin only; unknown or malformed ids are 404; unknown fields are 400.
    let user = app.create_user("mallory").await;
    let session = app.login("mallory", PASSWORD).await;
    let r403 = app.request(Method::PATCH, &path, Some(&session)).json(&json!({"disabled": true})).send().await.unwrap();
    assert_eq!(r403.status(), StatusCode::FORBIDDEN, "{user}");
    for bad in ["/v1/clients/nope", "/v1/clients/0190b0a2-0000-7000-8000-000000000000"] {
        let r = app.request(Method::PATCH, bad, Some(ADMIN_TOKEN)).json(&json!({"disabled": true})).send().await.unwrap();
        assert_eq!(error_of(r, StatusCode::NOT_FOUND).await, "not_found");
    }
    let r = app.request(Method::PATCH, &path, Some(ADMIN_TOKEN)).json(&json!({"disabled": true, "x": 1})).send().await.unwrap();
    assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request");

    // Disable: its tokens are inactive, its credentials refused, a marker is written.
    let token = issue(&app, &client).await;
    assert_eq!(app.introspect(&client, &token).await["active"], true);
    let r = app.request(Method::PATCH, &path, Some(ADMIN_TOKEN)).json(&json!({"disabled": true})).send().await.unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!((status, body["disabled"].as_bool()), (StatusCode::OK, Some(true)));
    assert!(body.get("client_secret").is_none());
    let marker: Option<i64> = kv.get(&marker_key).await.unwrap();
    assert!(marker.is_some(), "disabling writes the client marker");
    let (status, _) = app.token(&client, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = app.create_client(&["client_credentials"], &["read", INTROSPECT_RIGHT]).await;
    assert_eq!(app.introspect(&other, &token).await, json!({"active": false}));
    let r = app.request(Method::GET, "/v1/userinfo", Some(&token)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Enable again: the client works, its old tokens stay dead.
    let r = app.request(Method::PATCH, &path, Some(ADMIN_TOKEN)).json(&json!({"disabled": false})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.introspect(&other, &token).await["active"], false);
    let fresh = issue(&app, &client).await;

    // Rotation: the old secret stops at once, the new one works, old tokens end.
    let r = app.request(Method::POST, &format!("{path}/secret"), Some(ADMIN_TOKEN)).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    let rotated = (client.0.clone(), body["client_secret"].as_str().unwrap().to_string());
    assert_ne!(rotated.1, client.1);
    let (status, _) = app.token(&client, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old secret is refused");
    assert_eq!(app.introspect(&other, &fresh).await["active"], false);
    let newest = issue(&app, &rotated).await;
    assert_eq!(app.introspect(&rotated, &newest).await["active"], true);
    let second: i64 = kv.get(&marker_key).await.unwrap();
    assert!(second > marker.unwrap(), "every change moves the marker");

    // Delete: gone, tokens with it.
    let r = app.request(Method::DELETE, &path, Some(ADMIN_TOKEN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.introspect(&other, &newest).await["active"], false);
    let (status, _) = app.token(&rotated, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let r = app.request(Method::DELETE, &path, Some(ADMIN_TOKEN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let third: i64 = kv.get(&marker_key).await.unwrap();
    assert!(third > second);

    // Each change is in the audit log, with no secret in it.
    for action in ["client.disable", "client.enable", "client.secret_rotate", "client.delete"] {
        let entries = audited(&app, action).await;
        assert_eq!(entries.len(), 1, "{action}: {entries:?}");
        assert_eq!(entries[0]["details"]["client_id"], client.0.as_str());
        let text = entries[0].to_string();
        assert!(!text.contains(&client.1) && !text.contains(&rotated.1), "secret in the audit log");
    }
}

#[tokio::test]
async fn introspection_is_limited_to_own_tokens_without_the_right() {
    let app = TestApp::start().await;
    let owner = app.create_client(&["client_credentials"], &["read"]).await;
    let stranger = app.create_client(&["client_credentials"], &["read"]).await;
    let resource_server = app.create_client(&["client_credentials"], &[INTROSPECT_RIGHT]).await;
    let token = issue(&app, &owner).await;

    assert_eq!(app.introspect(&owner, &token).await["active"], true);
    assert_eq!(app.introspect(&stranger, &token).await, json!({"active": false}));
    let full = app.introspect(&resource_server, &token).await;
    assert_eq!((full["active"].as_bool(), full["client_id"].as_str()), (Some(true), Some(owner.0.as_str())));

    // The answer names its caller's right for the caching proxy.
    let r = app.post_form("/oauth/introspect", Some((&stranger.0, &stranger.1)), &[("token", &token)]).await;
    assert_eq!(r.headers()["x-quantaid-introspector"], format!("{} own", stranger.0).as_str());
    let r = app.post_form("/oauth/introspect", Some((&resource_server.0, &resource_server.1)), &[("token", &token)]).await;
    assert_eq!(r.headers()["x-quantaid-introspector"], format!("{} any", resource_server.0).as_str());
}
