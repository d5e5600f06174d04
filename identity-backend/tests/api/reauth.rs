//! Sensitive changes (TOTP enrolment and removal, email change) need the password or a
//! TOTP code presented within the last few minutes, not just any live session.

use std::time::Duration;

use quantaid_backend::config;
use reqwest::{Method, StatusCode};
use serde_json::json;

use quantaid_test_stack::*;

/// Longer than the configured re-authentication age of 3 s (short, so tests are quick;
/// long enough that the steps after a re-authentication fit in it on a busy machine).
const STALE: Duration = Duration::from_millis(3200);
use crate::mfa::{code, enrol, now_step, wrong_code};

async fn reauth(app: &TestApp, session: &str, body: serde_json::Value) -> reqwest::Response {
    app.post_json("/v1/auth/reauthenticate", Some(session), body).await
}

async fn patch_email(app: &TestApp, bearer: &str, id: &str, email: &str) -> reqwest::Response {
    app.request(Method::PATCH, &format!("/v1/users/{id}"), Some(bearer)).json(&json!({"email": email})).send().await.unwrap()
}

async fn remove_totp(app: &TestApp, bearer: &str, id: &str) -> reqwest::Response {
    app.request(Method::DELETE, &format!("/v1/users/{id}/mfa/totp"), Some(bearer)).send().await.unwrap()
}

async fn audit_actions(app: &TestApp, id: &str) -> Vec<String> {
    let (_, page) = json_of(app.get(&format!("/v1/audit-logs?user_id={id}&limit=500"), Some(ADMIN_TOKEN)).await).await;
    page["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn sensitive_changes_need_a_recent_password_or_code() {
    let app = TestApp::with(&[(config::REAUTH_MAX_AGE_SECS, "3")]).await;
    let id = app.create_user("alice").await;
    let session = app.login("alice", PASSWORD).await;
    tokio::time::sleep(STALE).await;

    // A session whose password was entered too long ago: refused, nothing changes.
    let r = app.post_json(&format!("/v1/users/{id}/mfa/totp"), Some(&session), json!({})).await;
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
    let r = patch_email(&app, &session, &id, "new@example.com").await;
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");

    // Re-authenticating with the wrong password fails like a login; the right one works.
    let r = reauth(&app, &session, json!({"password": "wrong password"})).await;
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "invalid_credentials");
    assert_eq!(reauth(&app, &session, json!({"password": PASSWORD})).await.status(), StatusCode::NO_CONTENT);
    let (status, body) = json_of(app.post_json(&format!("/v1/users/{id}/mfa/totp"), Some(&session), json!({})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, user) = json_of(patch_email(&app, &session, &id, "New@Example.com").await).await;
    assert_eq!((status, user["email"].as_str()), (StatusCode::OK, Some("new@example.com")), "{user}");
    // A session may change its own email only, not other fields or other users.
    let r = app.request(Method::PATCH, &format!("/v1/users/{id}"), Some(&session)).json(&json!({"disabled": true})).send().await.unwrap();
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
    let bob = app.create_user("bob").await;
    assert_eq!(error_of(patch_email(&app, &session, &bob, "b2@example.com").await, StatusCode::FORBIDDEN).await, "forbidden");
    assert!(audit_actions(&app, &id).await.contains(&"session.reauthenticated".to_string()));
}

#[tokio::test]
async fn removing_totp_needs_a_recent_code_or_password() {
    let app = TestApp::with(&[(config::REAUTH_MAX_AGE_SECS, "3"), (config::MFA_MAX_FAILURES_PER_ACCOUNT, "2")]).await;
    let (id, secret, _) = enrol(&app, "alice").await;
    let challenge = crate::mfa::login_challenge(&app, "alice").await;
    let (_, body) =
        json_of(app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": challenge, "code": code(&secret, now_step() + 1)})).await)
            .await;
    let session = body["session_token"].as_str().unwrap().to_string();
    tokio::time::sleep(STALE).await;

    assert_eq!(error_of(remove_totp(&app, &session, &id).await, StatusCode::FORBIDDEN).await, "forbidden");
    // Codes given to re-authenticate are throttled with the other MFA attempts.
    for i in 0..2 {
        let r = reauth(&app, &session, json!({"code": wrong_code(&secret, i)})).await;
        assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
    }
    let r = reauth(&app, &session, json!({"code": code(&secret, now_step())})).await;
    assert_eq!(error_of(r, StatusCode::TOO_MANY_REQUESTS).await, "too_many_attempts");
    // The password still works, and then the factor can be removed.
    assert_eq!(reauth(&app, &session, json!({"password": PASSWORD})).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(remove_totp(&app, &session, &id).await.status(), StatusCode::NO_CONTENT);
    let (_, user) = json_of(app.get(&format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).await).await;
    assert_eq!(user["mfa_enabled"], false);
    assert!(audit_actions(&app, &id).await.contains(&"mfa.removed".to_string()));
    // Login no longer asks for a code.
    app.login("alice", PASSWORD).await;
    // Removing again: nothing to remove.
    assert_eq!(error_of(remove_totp(&app, ADMIN_TOKEN, &id).await, StatusCode::NOT_FOUND).await, "not_found");
}

#[tokio::test]
async fn a_totp_code_re_authenticates_once_and_admins_need_none() {
    let app = TestApp::with(&[(config::REAUTH_MAX_AGE_SECS, "3")]).await;
    let (id, secret, step) = enrol(&app, "alice").await;
    let challenge = crate::mfa::login_challenge(&app, "alice").await;
    let (_, body) =
        json_of(app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": challenge, "code": code(&secret, step + 1)})).await).await;
    let session = body["session_token"].as_str().unwrap().to_string();
    tokio::time::sleep(STALE).await;
    // A code already used (for the login) cannot be replayed to re-authenticate.
    let r = reauth(&app, &session, json!({"code": code(&secret, step + 1)})).await;
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
    let r = reauth(&app, &session, json!({"password": PASSWORD, "code": "123456"})).await;
    assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request");
    // Admins (not sessions) are not asked to re-authenticate.
    assert_eq!(remove_totp(&app, ADMIN_TOKEN, &id).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(patch_email(&app, ADMIN_TOKEN, &id, "a3@example.com").await.status(), StatusCode::OK);
}
