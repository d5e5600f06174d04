use data_encoding_lite::decode_base32;
use quantaid_backend::security::totp;
use reqwest::StatusCode;
use serde_json::{json, Value};

use quantaid_backend::config;

use quantaid_test_stack::*;

pub(crate) fn code(secret: &[u8], step: u64) -> String {
    format!("{:06}", totp::hotp(secret, step, 6))
}

pub(crate) fn now_step() -> u64 {
    totp::step_at(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
}

/// Enrols and confirms TOTP for `username`; returns (user id, secret, step used).
pub(crate) async fn enrol(app: &TestApp, username: &str) -> (String, Vec<u8>, u64) {
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

pub(crate) async fn login_challenge(app: &TestApp, username: &str) -> String {
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

/// The `n`th six-digit code that is not valid around now (so it is surely wrong).
pub(crate) fn wrong_code(secret: &[u8], n: u32) -> String {
    let step = now_step();
    let valid: Vec<String> = (step - 2..=step + 2).map(|s| code(secret, s)).collect();
    (100_000 + n * 7..).map(|c| format!("{c:06}")).find(|c| !valid.contains(c)).unwrap()
}

async fn verify(app: &TestApp, challenge: &str, code: &str) -> reqwest::Response {
    app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": challenge, "code": code})).await
}

async fn audit_count(app: &TestApp, user_id: &str, action: &str) -> usize {
    let (status, page) =
        json_of(app.get(&format!("/v1/audit-logs?user_id={user_id}&action={action}&limit=500"), Some(ADMIN_TOKEN)).await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().len()
}

/// Logging in again used to hand out a fresh challenge with a fresh budget of five
/// codes, so guessing was unlimited. Now MFA failures count per account across
/// challenges; only a right code (not a right password) clears them.
#[tokio::test]
async fn mfa_guessing_is_throttled_per_account_across_challenges() {
    let app = TestApp::start().await;
    let (id, secret, _) = enrol(&app, "alice").await;
    let mut checked = 0;
    let mut throttled = None;
    'outer: for round in 0..20u32 {
        let challenge = login_challenge(&app, "alice").await;
        for i in 0..2 {
            let r = verify(&app, &challenge, &wrong_code(&secret, round * 2 + i)).await;
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                throttled = Some(r);
                break 'outer;
            }
            assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
            checked += 1;
        }
    }
    let r = throttled.expect("40 wrong codes over 20 challenges were never throttled");
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 0, "{retry_after}");
    assert_eq!(error_of(r, StatusCode::TOO_MANY_REQUESTS).await, "too_many_attempts");
    assert_eq!(checked, 10, "the default budget is 10 wrong codes per account");

    // The right password still yields a challenge, but it buys no new guesses: even the
    // right code waits for the window to pass.
    let challenge = login_challenge(&app, "alice").await;
    let r = verify(&app, &challenge, &code(&secret, now_step() + 1)).await;
    assert_eq!(error_of(r, StatusCode::TOO_MANY_REQUESTS).await, "too_many_attempts");

    // The owner sees it in the audit log: every wrong code, and the lock-out once.
    assert_eq!(audit_count(&app, &id, "mfa.failure").await, 10);
    assert_eq!(audit_count(&app, &id, "mfa.throttled").await, 1);

    // Other accounts are not affected.
    let (_, bob_secret, _) = enrol(&app, "bob").await;
    let challenge = login_challenge(&app, "bob").await;
    let (status, body) = json_of(verify(&app, &challenge, &code(&bob_secret, now_step() + 1)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_right_code_clears_the_accounts_mfa_failures() {
    let app = TestApp::with(&[(config::MFA_MAX_FAILURES_PER_ACCOUNT, "3")]).await;
    let (_, secret, step) = enrol(&app, "alice").await;
    let challenge = login_challenge(&app, "alice").await;
    for i in 0..2 {
        assert_eq!(verify(&app, &challenge, &wrong_code(&secret, i)).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(verify(&app, &challenge, &code(&secret, step + 1)).await.status(), StatusCode::OK);
    // Two more wrong codes would be four in a row without the reset.
    let challenge = login_challenge(&app, "alice").await;
    for i in 0..2 {
        assert_eq!(verify(&app, &challenge, &wrong_code(&secret, 10 + i)).await.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn mfa_failures_are_throttled_per_ip() {
    let app = TestApp::with(&[(config::MFA_MAX_FAILURES_PER_IP, "3")]).await;
    let (_, alice_secret, _) = enrol(&app, "alice").await;
    let (_, bob_secret, _) = enrol(&app, "bob").await;
    let challenge = login_challenge(&app, "alice").await;
    for i in 0..2 {
        assert_eq!(verify(&app, &challenge, &wrong_code(&alice_secret, i)).await.status(), StatusCode::UNAUTHORIZED);
    }
    let challenge = login_challenge(&app, "bob").await;
    assert_eq!(verify(&app, &challenge, &wrong_code(&bob_secret, 0)).await.status(), StatusCode::UNAUTHORIZED);
    let r = verify(&app, &challenge, &wrong_code(&bob_secret, 1)).await;
    assert_eq!(error_of(r, StatusCode::TOO_MANY_REQUESTS).await, "too_many_attempts");
    // Another client address (through the trusted local proxy) has its own budget.
    let challenge = login_challenge(&app, "bob").await;
    let r = app
        .http
        .post(app.url("/v1/auth/mfa/verify"))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"mfa_token": challenge, "code": code(&bob_secret, now_step() + 1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Thirty wrong codes sent at once on one challenge used to all be checked: the
/// five-per-challenge count was read, then written. Each attempt is now counted before
/// its code is checked.
#[tokio::test]
async fn wrong_codes_on_one_challenge_are_counted_atomically() {
    let app = TestApp::with(&[(config::MFA_MAX_FAILURES_PER_ACCOUNT, "1000"), (config::MFA_MAX_FAILURES_PER_IP, "1000")]).await;
    let (id, secret, _) = enrol(&app, "alice").await;
    let challenge = login_challenge(&app, "alice").await;
    let attempts = (0..30u32).map(|i| {
        let (app, challenge, code) = (&app, challenge.clone(), wrong_code(&secret, i));
        async move { verify(app, &challenge, &code).await.status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    let checked = audit_count(&app, &id, "mfa.failure").await;
    assert!(checked <= 5, "{checked} of 30 concurrent codes were checked against one challenge");
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
