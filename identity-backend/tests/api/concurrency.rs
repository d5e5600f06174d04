//! Races that must resolve to exactly one winner and no 5xx.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use quantaid_test_stack::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_refresh_token_reuse_has_at_most_one_winner() {
    let app = TestApp::start().await;
    app.create_user("alice").await;
    let client = app.create_client(&["password", "refresh_token"], &["read"]).await;
    let (_, t) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    let refresh = t["refresh_token"].as_str().unwrap().to_string();

    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
    let attempts = (0..16).map(|_| app.token(&client, &form));
    let results = join_all(attempts).await;
    let winners: Vec<_> = results.iter().filter(|(s, _)| *s == StatusCode::OK).collect();
    assert!(winners.len() <= 1, "{} winners", winners.len());
    for (status, body) in &results {
        assert!(*status == StatusCode::OK || (*status == StatusCode::BAD_REQUEST && body["error"] == "invalid_grant"), "{status} {body}");
    }
    // The losers were reuse: the family, winner's tokens included, is revoked.
    for (_, body) in winners {
        assert_eq!(app.introspect(&client, body["access_token"].as_str().unwrap()).await["active"], false);
        assert_eq!(app.introspect(&client, body["refresh_token"].as_str().unwrap()).await["active"], false);
    }
    assert_eq!(app.introspect(&client, t["access_token"].as_str().unwrap()).await["active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logouts_of_one_session() {
    let app = TestApp::start().await;
    app.create_user("alice").await;
    let session = app.login("alice", PASSWORD).await;
    let logouts = (0..8).map(|_| app.request(reqwest::Method::POST, "/v1/auth/logout", Some(&session)).send());
    for r in join_all(logouts).await {
        let status = r.unwrap().status();
        assert!(status == StatusCode::NO_CONTENT || status == StatusCode::UNAUTHORIZED, "{status}");
    }
    assert_eq!(app.get("/v1/auth/session", Some(&session)).await.status(), StatusCode::UNAUTHORIZED);
    let pg = app.pg().await;
    let logged: i64 = pg.query_one("SELECT count(*) FROM audit_logs WHERE action = 'logout'", &[]).await.unwrap().get(0);
    assert_eq!(logged, 1, "one session ends once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creation_of_one_username() {
    let app = TestApp::start().await;
    let creates = (0..10).map(|i| {
        let body = json!({"username": "same", "email": format!("same{i}@example.com"), "password": PASSWORD});
        app.post_json("/v1/users", Some(ADMIN_TOKEN), body)
    });
    let statuses: Vec<StatusCode> = join_all(creates).await.into_iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mfa_verification_of_one_challenge_yields_one_session() {
    use quantaid_backend::security::totp;
    let app = TestApp::start().await;
    let id = app.create_user("alice").await;
    let session = app.login("alice", PASSWORD).await;
    let (_, e) = json_of(app.post_json(&format!("/v1/users/{id}/mfa/totp"), Some(&session), json!({})).await).await;
    let secret = base32_decode(e["secret"].as_str().unwrap());
    let step = totp::step_at(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    let r = app
        .post_json(
            &format!("/v1/users/{id}/mfa/totp/confirm"),
            Some(&session),
            json!({"code": format!("{:06}", totp::hotp(&secret, step, 6))}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, login) = json_of(app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": PASSWORD})).await).await;
    let challenge = login["mfa_token"].as_str().unwrap().to_string();
    let code = format!("{:06}", totp::hotp(&secret, step + 1, 6));
    let verifies = (0..8).map(|_| app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": challenge, "code": code})));
    let statuses: Vec<StatusCode> = join_all(verifies).await.into_iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
}

fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut n, mut out) = (0u64, 0, Vec::new());
    for c in s.bytes() {
        bits = (bits << 5) | ALPHABET.iter().position(|a| *a == c).unwrap() as u64;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}
