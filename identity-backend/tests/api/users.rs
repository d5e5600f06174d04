use quantaid_backend::config;
use reqwest::{Method, StatusCode};
use serde_json::json;

use quantaid_test_stack::*;

#[tokio::test]
async fn create_get_list_update_delete() {
    let app = TestApp::start().await;
    let id = app.create_user("alice").await;

    let (status, user) = json_of(app.get(&format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["mfa_enabled"], false);
    assert!(user.get("password_hash").is_none());

    // Uniqueness is case-insensitive, for usernames and emails.
    let dup = json!({"username": "ALICE", "email": "other@example.com", "password": PASSWORD});
    assert_eq!(error_of(app.post_json("/v1/users", Some(ADMIN_TOKEN), dup).await, StatusCode::CONFLICT).await, "conflict");
    let dup = json!({"username": "alice2", "email": "Alice@Example.com", "password": PASSWORD});
    assert_eq!(error_of(app.post_json("/v1/users", Some(ADMIN_TOKEN), dup).await, StatusCode::CONFLICT).await, "conflict");

    // The password policy.
    let weak = json!({"username": "bob", "email": "bob@example.com", "password": "short"});
    assert_eq!(error_of(app.post_json("/v1/users", Some(ADMIN_TOKEN), weak).await, StatusCode::BAD_REQUEST).await, "invalid_request");

    // PATCH changes email; unknown ids are 404.
    let r = app
        .request(Method::PATCH, &format!("/v1/users/{id}"), Some(ADMIN_TOKEN))
        .json(&json!({"email": "a2@example.com"}))
        .send()
        .await
        .unwrap();
    let (status, user) = json_of(r).await;
    assert_eq!((status, user["email"].as_str()), (StatusCode::OK, Some("a2@example.com")));
    let missing = "0190f0f0-0000-7000-8000-000000000000";
    let r = app
        .request(Method::PATCH, &format!("/v1/users/{missing}"), Some(ADMIN_TOKEN))
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r, StatusCode::NOT_FOUND).await, "not_found");

    // DELETE, then it is gone.
    let r = app.request(Method::DELETE, &format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(error_of(app.get(&format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).await, StatusCode::NOT_FOUND).await, "not_found");
    let r = app.request(Method::DELETE, &format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_is_newest_first_with_keyset_pagination() {
    let app = TestApp::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create_user(&format!("user{i}")).await);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users?limit=2&cursor={c}"),
            None => "/v1/users?limit=2".to_string(),
        };
        let (status, page) = json_of(app.get(&path, Some(ADMIN_TOKEN)).await).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(error_of(app.get("/v1/users?limit=0", Some(ADMIN_TOKEN)).await, StatusCode::BAD_REQUEST).await, "invalid_request");
    assert_eq!(error_of(app.get("/v1/users?cursor=garbage", Some(ADMIN_TOKEN)).await, StatusCode::BAD_REQUEST).await, "invalid_request");
}

#[tokio::test]
async fn who_may_read_a_user() {
    let app = TestApp::start().await;
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let alice_session = app.login("alice", PASSWORD).await;

    assert_eq!(app.get(&format!("/v1/users/{alice}"), Some(&alice_session)).await.status(), StatusCode::OK);
    assert_eq!(error_of(app.get(&format!("/v1/users/{bob}"), Some(&alice_session)).await, StatusCode::FORBIDDEN).await, "forbidden");
    assert_eq!(error_of(app.get(&format!("/v1/users/{bob}"), None).await, StatusCode::UNAUTHORIZED).await, "unauthorized");

    // An access token with users:read may read anyone; without it, no one.
    let reader = app.create_client(&["client_credentials"], &["users:read", "other"]).await;
    let (_, t) = app.token(&reader, &[("grant_type", "client_credentials"), ("scope", "users:read")]).await;
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/users/{bob}"), Some(token)).await.status(), StatusCode::OK);
    let (_, t) = app.token(&reader, &[("grant_type", "client_credentials"), ("scope", "other")]).await;
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/users/{bob}"), Some(token)).await.status(), StatusCode::FORBIDDEN);

    // Admin-only endpoints refuse a plain session.
    assert_eq!(error_of(app.get("/v1/users", Some(&alice_session)).await, StatusCode::FORBIDDEN).await, "forbidden");
    // An access token with the admin scope is an admin.
    let admin_client = app.create_client(&["client_credentials"], &["admin"]).await;
    let (_, t) = app.token(&admin_client, &[("grant_type", "client_credentials")]).await;
    assert_eq!(app.get("/v1/users", t["access_token"].as_str()).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn disabling_or_deleting_revokes_everything() {
    let app = TestApp::start().await;
    let id = app.create_user("carol").await;
    let session = app.login("carol", PASSWORD).await;
    let client = app.create_client(&["password", "refresh_token"], &["read"]).await;
    let (status, t) = app.token(&client, &[("grant_type", "password"), ("username", "carol"), ("password", PASSWORD)]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.introspect(&client, &access).await["active"], true);

    let r =
        app.request(Method::PATCH, &format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).json(&json!({"disabled": true})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/auth/session", Some(&session)).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.introspect(&client, &access).await, json!({"active": false}));
    // A disabled user cannot log in, and gets the same answer as a wrong password.
    let r = app.post_json("/v1/auth/login", None, json!({"username": "carol", "password": PASSWORD})).await;
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "invalid_credentials");

    // Re-enabling does not resurrect the old credentials.
    let r =
        app.request(Method::PATCH, &format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).json(&json!({"disabled": false})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/auth/session", Some(&session)).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.introspect(&client, &access).await["active"], false);

    let session = app.login("carol", PASSWORD).await;
    let r = app.request(Method::DELETE, &format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/auth/session", Some(&session)).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn password_change_revokes_other_sessions_and_tokens() {
    let app = TestApp::start().await;
    let id = app.create_user("dave").await;
    let current = app.login("dave", PASSWORD).await;
    let other = app.login("dave", PASSWORD).await;
    let client = app.create_client(&["password"], &["read"]).await;
    let (_, t) = app.token(&client, &[("grant_type", "password"), ("username", "dave"), ("password", PASSWORD)]).await;
    let access = t["access_token"].as_str().unwrap().to_string();

    let path = format!("/v1/users/{id}/password");
    // The user must give the current password.
    let r = app.post_json(&path, Some(&current), json!({"new_password": "a brand new secret"})).await;
    assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request");
    let r = app.post_json(&path, Some(&current), json!({"current_password": "wrong password", "new_password": "a brand new secret"})).await;
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "invalid_credentials");
    let r = app.post_json(&path, Some(&current), json!({"current_password": PASSWORD, "new_password": "a brand new secret"})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.get("/v1/auth/session", Some(&current)).await.status(), StatusCode::OK, "the caller's session stays");
    assert_eq!(app.get("/v1/auth/session", Some(&other)).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.introspect(&client, &access).await["active"], false);
    app.login("dave", "a brand new secret").await;

    // An admin may reset without the current password; that revokes every session.
    let r = app.post_json(&path, Some(ADMIN_TOKEN), json!({"new_password": "admin reset secret"})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/auth/session", Some(&current)).await.status(), StatusCode::UNAUTHORIZED);
    // Someone else's session may not change it.
    app.create_user("eve").await;
    let eve = app.login("eve", PASSWORD).await;
    let r = app.post_json(&path, Some(&eve), json!({"current_password": "x", "new_password": "eve was here!"})).await;
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
    let _ = config::DB_HOST;
}
