use quantaid_backend::config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use quantaid_test_stack::*;

async fn audit(app: &TestApp, query: &str) -> Value {
    let (status, body) = json_of(app.get(&format!("/v1/audit-logs?{query}"), Some(ADMIN_TOKEN)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn actions(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn events_are_recorded_and_filterable() {
    let app = TestApp::start().await;
    let id = app.create_user("alice").await;
    app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": "wrong password"})).await;
    let session = app.login("alice", PASSWORD).await;
    app.request(reqwest::Method::POST, "/v1/auth/logout", Some(&session)).send().await.unwrap();
    let client = app.create_client(&["client_credentials"], &["read"]).await;
    let (_, t) = app.token(&client, &[("grant_type", "client_credentials")]).await;
    app.post_form("/oauth/revoke", Some((&client.0, &client.1)), &[("token", t["access_token"].as_str().unwrap())]).await;

    let all = audit(&app, &format!("user_id={id}")).await;
    assert_eq!(actions(&all), ["logout", "login.success", "login.failure", "user.create"], "newest first");
    let entry = &all["items"][0];
    assert_eq!(entry["ip_address"], "127.0.0.1");
    assert_eq!(entry["user_id"], id.as_str());
    assert!(entry["created_at"].is_string());

    let failures = audit(&app, &format!("user_id={id}&action=login.failure")).await;
    assert_eq!(actions(&failures), ["login.failure"]);
    let by_ip = audit(&app, "ip_address=127.0.0.1&limit=500").await;
    let ip_actions = actions(&by_ip);
    for expected in ["client.create", "token.issue", "token.revoke", "user.create"] {
        assert!(ip_actions.contains(&expected.to_string()), "{expected} in {ip_actions:?}");
    }
    // No secret ever lands in the details.
    let text = by_ip.to_string();
    assert!(!text.contains(&client.1) && !text.contains(PASSWORD) && !text.contains(&session));
    assert_eq!(audit(&app, "since=2999-01-01T00:00:00Z").await["items"], json!([]));
}

#[tokio::test]
async fn pagination_walks_every_entry_once() {
    let app = TestApp::start().await;
    for i in 0..7 {
        app.create_user(&format!("user{i}")).await;
    }
    let mut seen = Vec::new();
    let mut query = "action=user.create&limit=3".to_string();
    loop {
        let page = audit(&app, &query).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("action=user.create&limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7);
}

#[tokio::test]
async fn query_errors() {
    let app = TestApp::start().await;
    for bad in ["ip_address=not-an-ip", "user_id=nope", "limit=0", "limit=100000", "since=yesterday", "cursor=%%%", "colour=red"] {
        let r = app.get(&format!("/v1/audit-logs?{bad}"), Some(ADMIN_TOKEN)).await;
        assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request", "{bad}");
    }
    app.create_user("alice").await;
    let session = app.login("alice", PASSWORD).await;
    assert_eq!(app.get("/v1/audit-logs", Some(&session)).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.get("/v1/audit-logs", None).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // Loopback is trusted by default: the sidecar proxy's X-Forwarded-For is used.
    let app = TestApp::start().await;
    app.create_user("alice").await;
    let r = app
        .http
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", "203.0.113.7")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = audit(&app, "ip_address=203.0.113.7").await;
    assert_eq!(actions(&page), ["login.success"]);

    // With no trusted proxies, the header is ignored.
    let app = TestApp::with(&[(config::TRUSTED_PROXIES, "10.99.0.0/16")]).await;
    app.create_user("alice").await;
    app.http
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", "203.0.113.7")
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(audit(&app, "ip_address=203.0.113.7").await["items"], json!([]));
    assert_eq!(actions(&audit(&app, "ip_address=127.0.0.1&action=login.success").await), ["login.success"]);
}

#[tokio::test]
async fn every_issuance_is_audited_once_with_its_grant() {
    let app = TestApp::start().await;
    let id = app.create_user("alice").await;
    let client = app.create_client(&["client_credentials", "password", "refresh_token"], &["read"]).await;
    let (status, _) = app.token(&client, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, t) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let refresh = t["refresh_token"].as_str().unwrap();
    let (status, _) = app.token(&client, &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!(status, StatusCode::OK);

    let issued = audit(&app, "action=token.issue").await;
    let mut grants: Vec<(String, Value)> = issued["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["details"]["client_id"], client.0.as_str());
            (e["details"]["grant_type"].as_str().unwrap().to_string(), e["user_id"].clone())
        })
        .collect();
    grants.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        grants,
        [("client_credentials".to_string(), Value::Null), ("password".to_string(), json!(id)), ("refresh_token".to_string(), json!(id)),]
    );
}

/// The account's owner can read the entries about its own account (failed logins, MFA
/// guesses), and nobody else's.
#[tokio::test]
async fn users_read_their_own_audit_entries_only() {
    let app = TestApp::start().await;
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": "wrong password"})).await;
    let session = app.login("alice", PASSWORD).await;
    let (status, page) = json_of(app.get(&format!("/v1/audit-logs?user_id={alice}&action=login.failure"), Some(&session)).await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(actions(&page), ["login.failure"]);
    let r = app.get(&format!("/v1/audit-logs?user_id={bob}"), Some(&session)).await;
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
}

/// `X-Forwarded-For` is read right to left and stops at the first hop that is not a
/// trusted proxy (the client) or cannot be parsed. One bad entry used to throw the
/// whole header away, so the client's failures landed in the proxy's own bucket.
#[tokio::test]
async fn forwarded_for_stops_at_the_first_untrusted_or_unparsable_hop() {
    let app = TestApp::with(&[(config::LOGIN_MAX_FAILURES_PER_IP, "4")]).await;
    let id = app.create_user("alice").await;
    let cases = [
        ("garbage, 203.0.113.5", "203.0.113.5"),
        ("unknown, 203.0.113.6", "203.0.113.6"),
        (", 203.0.113.7", "203.0.113.7"),
        ("1.2.3.4:4711, 203.0.113.8", "203.0.113.8"),
        ("6.6.6.6, 203.0.113.9, 127.0.0.1", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
    ];
    for (xff, expected) in cases {
        let r = app
            .http
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", xff)
            .json(&json!({"username": "alice", "password": "wrong password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{xff}");
        let page = audit(&app, &format!("user_id={id}&action=login.failure&limit=1")).await;
        assert_eq!(page["items"][0]["ip_address"], expected, "{xff}");
        // Clear the account's counter, so only the per-IP counters are exercised.
        app.login("alice", PASSWORD).await;
    }
    // An unparsable hop right of any untrusted one: the nearest known address (the
    // trusted proxy) is all that can be said.
    let r = app
        .http
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", "203.0.113.5, garbage")
        .json(&json!({"username": "alice", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let page = audit(&app, &format!("user_id={id}&action=login.failure&limit=1")).await;
    assert_eq!(page["items"][0]["ip_address"], "127.0.0.1");
    // Six clients' failures were not pooled into the proxy's address: loopback has one
    // failure, under its limit of four.
    app.create_user("bob").await;
    app.login("bob", PASSWORD).await;
}
