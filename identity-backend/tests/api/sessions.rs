use quantaid_backend::config;
use reqwest::StatusCode;
use serde_json::json;

use quantaid_test_stack::*;

#[tokio::test]
async fn login_session_lookup_and_logout() {
    let app = TestApp::start().await;
    let id = app.create_user("alice").await;
    let r = app.post_json("/v1/auth/login", None, json!({"username": "Alice", "password": PASSWORD})).await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user_id"], id.as_str());
    assert_eq!(body["mfa_required"], false);
    let token = body["session_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("qst_"));

    let (status, session) = json_of(app.get("/v1/auth/session", Some(&token)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["user_id"], id.as_str());
    assert_eq!(session["mfa_verified"], false);
    assert!(session["expires_at"].as_str().unwrap() > session["created_at"].as_str().unwrap());

    // The cookie works as well as the header.
    let r =
        app.http.get(app.url("/v1/auth/session")).header("cookie", format!("theme=dark; quantaid_session={token}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Only a digest is stored.
    let pg = app.pg().await;
    let raw: i64 = pg
        .query_one("SELECT count(*) FROM sessions WHERE encode(token_digest, 'escape') LIKE '%' || $1 || '%'", &[&token])
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, 0);

    let r = app.request(reqwest::Method::POST, "/v1/auth/logout", Some(&token)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.get("/v1/auth/session", Some(&token)).await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"quantaid\"");
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
    // Logging out twice: the second has no session to end.
    let r = app.request(reqwest::Method::POST, "/v1/auth/logout", Some(&token)).send().await.unwrap();
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let app = TestApp::start().await;
    app.create_user("alice").await;
    let wrong = app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": "not the password"})).await;
    let unknown = app.post_json("/v1/auth/login", None, json!({"username": "nobody", "password": "not the password"})).await;
    let (s1, b1) = json_of(wrong).await;
    let (s2, b2) = json_of(unknown).await;
    assert_eq!((s1, s2), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(b1, b2, "the body must not reveal whether the user exists");
    assert_eq!(b1["error"], "invalid_credentials");
    assert_eq!(app.metric("quantaid_logins_total{result=\"failure\"}").await, 2.0);
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_account() {
    let app = TestApp::start().await;
    app.create_user("alice").await;
    for _ in 0..5 {
        let r = app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": "wrong password"})).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Now even the right password is refused until the window passes.
    let r = app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": PASSWORD})).await;
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 0 && retry_after <= 900, "{retry_after}");
    assert_eq!(error_of(r, StatusCode::TOO_MANY_REQUESTS).await, "too_many_attempts");
    // Other accounts from the same IP are not locked by one account's failures.
    app.create_user("bob").await;
    app.login("bob", PASSWORD).await;
    assert_eq!(app.metric("quantaid_logins_total{result=\"throttled\"}").await, 1.0);
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_ip() {
    let app = TestApp::with(&[(config::LOGIN_MAX_FAILURES_PER_IP, "3")]).await;
    app.create_user("alice").await;
    for name in ["x1", "x2", "x3"] {
        let r = app.post_json("/v1/auth/login", None, json!({"username": name, "password": "wrong password"})).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": PASSWORD})).await;
    assert_eq!(error_of(r, StatusCode::TOO_MANY_REQUESTS).await, "too_many_attempts");
}

#[tokio::test]
async fn a_successful_login_resets_the_account_counter() {
    let app = TestApp::start().await;
    app.create_user("alice").await;
    for _ in 0..3 {
        app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": "wrong password"})).await;
    }
    app.login("alice", PASSWORD).await;
    for _ in 0..3 {
        app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": "wrong password"})).await;
    }
    app.login("alice", PASSWORD).await;
}

#[tokio::test]
async fn sessions_expire() {
    let app = TestApp::with(&[(config::SESSION_TTL_SECS, "1")]).await;
    app.create_user("alice").await;
    let token = app.login("alice", PASSWORD).await;
    assert_eq!(app.get("/v1/auth/session", Some(&token)).await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(app.get("/v1/auth/session", Some(&token)).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_all_by_session_and_by_admin() {
    let app = TestApp::start().await;
    let id = app.create_user("alice").await;
    let a = app.login("alice", PASSWORD).await;
    let b = app.login("alice", PASSWORD).await;
    let client = app.create_client(&["password"], &["read"]).await;
    let (_, t) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    let access = t["access_token"].as_str().unwrap().to_string();

    let r = app.request(reqwest::Method::POST, "/v1/auth/logout-all", Some(&a)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for s in [&a, &b] {
        assert_eq!(app.get("/v1/auth/session", Some(s)).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.introspect(&client, &access).await["active"], false);

    // Admin: needs a user_id; a session may not name someone else.
    let c = app.login("alice", PASSWORD).await;
    let r = app.request(reqwest::Method::POST, "/v1/auth/logout-all", Some(ADMIN_TOKEN)).send().await.unwrap();
    assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request");
    app.create_user("bob").await;
    let bob = app.login("bob", PASSWORD).await;
    let r = app.post_json("/v1/auth/logout-all", Some(&bob), json!({"user_id": id})).await;
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
    let r = app.post_json("/v1/auth/logout-all", Some(ADMIN_TOKEN), json!({"user_id": id})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/auth/session", Some(&c)).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/auth/session", Some(&bob)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn other_credentials_are_not_sessions() {
    let app = TestApp::start().await;
    let client = app.create_client(&["client_credentials"], &["read"]).await;
    let (_, t) = app.token(&client, &[("grant_type", "client_credentials")]).await;
    let access = t["access_token"].as_str().unwrap();
    for bad in [access, ADMIN_TOKEN, "qst_garbage", ""] {
        let r = app.get("/v1/auth/session", Some(bad)).await;
        assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized", "{bad}");
    }
    let r = app.request(reqwest::Method::POST, "/v1/auth/logout", Some(access)).send().await.unwrap();
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
}

/// A cookie is sent by the browser whatever page made the request, so a call
/// authenticated by the session cookie alone must come from a trusted origin. Before,
/// any site could log a user out everywhere with an empty cross-site form post.
#[tokio::test]
async fn cookie_authenticated_calls_from_other_sites_are_refused() {
    let app = TestApp::with(&[(config::CSRF_TRUSTED_ORIGINS, "https://app.example")]).await;
    app.create_user("alice").await;
    let session = app.login("alice", PASSWORD).await;
    let cookie = format!("quantaid_session={session}");
    let post = |path: &str| app.http.post(app.url(path)).header("cookie", &cookie);

    let cross_site = [
        post("/v1/auth/logout-all").header("origin", "https://evil.example").header("content-type", "text/plain"),
        post("/v1/auth/logout-all").header("origin", "https://evil.example").header("content-type", "application/x-www-form-urlencoded"),
        post("/v1/auth/logout-all").header("origin", "null"),
        post("/v1/auth/logout-all").header("sec-fetch-site", "cross-site"),
        post("/v1/auth/logout-all").header("sec-fetch-site", "same-site"),
        post("/v1/auth/logout").header("origin", "https://evil.example"),
    ];
    for request in cross_site {
        let r = request.send().await.unwrap();
        assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
    }
    // Nothing happened: the session is alive.
    assert_eq!(app.get("/v1/auth/session", Some(&session)).await.status(), StatusCode::OK);
    // Reads with the cookie are not state changes and stay allowed from anywhere.
    let r =
        app.http.get(app.url("/v1/auth/session")).header("cookie", &cookie).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A bearer header cannot be attached by another site's form, so it is not checked.
    let other = app.login("alice", PASSWORD).await;
    let r = app.http.post(app.url("/v1/auth/logout")).bearer_auth(&other).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // The configured origin, the issuer's own origin, and non-browser clients (no
    // Origin, no Sec-Fetch-Site) are accepted.
    let r = post("/v1/auth/logout").header("origin", "https://app.example").header("sec-fetch-site", "same-site").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for (name, value) in [("origin", "http://localhost:8080"), ("sec-fetch-site", "same-origin"), ("x-no-browser", "1")] {
        let session = app.login("alice", PASSWORD).await;
        let r = app
            .http
            .post(app.url("/v1/auth/logout"))
            .header("cookie", format!("quantaid_session={session}"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.get("/v1/auth/session", Some(&session)).await.status(), StatusCode::UNAUTHORIZED);
    }
    // QuantaID never sets the cookie itself (docs/security.md says who must, and how).
    let r = app.post_json("/v1/auth/login", None, serde_json::json!({"username": "alice", "password": PASSWORD})).await;
    assert!(r.headers().get("set-cookie").is_none());
}
