use data_encoding_lite::decode_base32;
use quantaid_backend::security::totp;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

fn code(secret: &[u8], step: u64) -> String {
    format!("{:06}", totp::hotp(secret, step, 6))
}

fn now_step() -> u64 {
    totp::step_at(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
}

/// Enrols and confirms TOTP for `username`; returns (user id, secret, step used).
async fn enrol(app: &TestApp, username: &str) -> (String, Vec<u8>, u64) {
    let id = app.create_user(username).await;
    let session = app.login(username, PASSWORD).await;
    let (status, body) = json_of(app.post_json(&format!("/v1/users/{id}/mfa/totp"), Some(&session), json!({})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with(&format!("otpauth://totp/QuantaID:{username}?secret=")), "{uri}");
    let secret = decode_base32(body["secret"].as_str().unwrap());
    assert_eq!(secret.len(), totp::SECRET_LEN);

    let confirm = format!("/v1/users/{id}/mfa/totp/confirm");
    let r = app.post_json(&confirm, Some(&session), json!({"code": "000000"})).await;
    let bad_status = r.status();
    let step = now_step();
    let r2 = app.post_json(&confirm, Some(&session), json!({"code": code(&secret, step)})).await;
    assert_eq!(r2.status(), StatusCode::NO_CONTENT);
    // "000000" might be the real code, once in a million runs.
    assert!(bad_status == StatusCode::BAD_REQUEST || bad_status == StatusCode::NO_CONTENT);
    (id, secret, step)
}

async fn login_challenge(app: &TestApp, username: &str) -> String {
    let (status, body) = json_of(app.post_json("/v1/auth/login", None, json!({"username": username, "password": PASSWORD})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mfa_required"], true);
    assert!(body.get("session_token").is_none(), "no session before the second factor");
    body["mfa_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn enrol_confirm_and_log_in_with_totp() {
    let app = TestApp::start().await;
    let (id, secret, step) = enrol(&app, "alice").await;
    let (_, user) = json_of(app.get(&format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).await).await;
    assert_eq!(user["mfa_enabled"], true);

    let challenge = login_challenge(&app, "alice").await;
    // The code used to confirm cannot be replayed.
    let r = app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": challenge, "code": code(&secret, step)})).await;
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized");

    // The next step's code works (clock skew of one step is allowed) — on a fresh challenge.
    let challenge = login_challenge(&app, "alice").await;
    let next = code(&secret, step + 1);
    let (status, body) = json_of(app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": challenge, "code": next})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = body["session_token"].as_str().unwrap();
    let (_, s) = json_of(app.get("/v1/auth/session", Some(session)).await).await;
    assert_eq!(s["mfa_verified"], true);

    // The challenge is single-use, and the code cannot be replayed on another challenge.
    let r = app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": challenge, "code": next})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let other = login_challenge(&app, "alice").await;
    let r = app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": other, "code": next})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    assert!(app.metric("quantaid_mfa_verifications_total{result=\"success\"}").await >= 2.0);
    assert!(app.metric("quantaid_mfa_verifications_total{result=\"failure\"}").await >= 2.0);
}

#[tokio::test]
async fn a_challenge_dies_after_five_wrong_codes() {
    let app = TestApp::start().await;
    let (_, secret, step) = enrol(&app, "alice").await;
    let challenge = login_challenge(&app, "alice").await;
    let right = code(&secret, step + 1);
    let mut wrong = 0;
    let mut candidate = 100000u32;
    while wrong < 5 {
        let c = format!("{candidate:06}");
        candidate += 1;
        if [code(&secret, step - 1), code(&secret, step), right.clone()].contains(&c) {
            continue;
        }
        let r = app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": challenge, "code": c})).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        wrong += 1;
    }
    let r = app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": challenge, "code": right})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a burnt challenge accepts nothing");
}

#[tokio::test]
async fn only_the_users_own_session_enrols_and_only_once() {
    let app = TestApp::start().await;
    let (id, _, _) = enrol(&app, "alice").await;
    app.create_user("bob").await;
    let bob = app.login("bob", PASSWORD).await;
    let r = app.post_json(&format!("/v1/users/{id}/mfa/totp"), Some(&bob), json!({})).await;
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
    let r = app.post_json(&format!("/v1/users/{id}/mfa/totp"), Some(ADMIN_TOKEN), json!({})).await;
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
    // Confirm without a pending enrolment.
    let bob_id: Value = json_of(app.get("/v1/auth/session", Some(&bob)).await).await.1;
    let bob_id = bob_id["user_id"].as_str().unwrap();
    let r = app.post_json(&format!("/v1/users/{bob_id}/mfa/totp/confirm"), Some(&bob), json!({"code": "123456"})).await;
    assert_eq!(error_of(r, StatusCode::CONFLICT).await, "conflict");
}

#[tokio::test]
async fn the_password_grant_refuses_mfa_users() {
    let app = TestApp::start().await;
    enrol(&app, "alice").await;
    let client = app.create_client(&["password"], &["read"]).await;
    let (status, body) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
}

/// A tiny RFC 4648 base32 decoder, so the test checks the API's encoding independently.
mod data_encoding_lite {
    pub fn decode_base32(s: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut bits = 0u64;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes().filter(|c| *c != b'=') {
            let v = ALPHABET.iter().position(|a| *a == c).expect("base32 character") as u64;
            bits = (bits << 5) | v;
            n += 5;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }
}
