//! Every kind of bad input gets a 4xx JSON error: never a 500, a panic or a hang.

use reqwest::{Method, StatusCode};
use serde_json::json;

use quantaid_test_stack::*;

/// JSON endpoints, with a caller that passes authentication where one is needed.
async fn json_endpoints(app: &TestApp) -> Vec<(Method, String, Option<String>)> {
    let id = app.create_user("alice").await;
    let session = app.login("alice", PASSWORD).await;
    vec![
        (Method::POST, "/v1/users".into(), Some(ADMIN_TOKEN.into())),
        (Method::PATCH, format!("/v1/users/{id}"), Some(ADMIN_TOKEN.into())),
        (Method::POST, format!("/v1/users/{id}/password"), Some(session.clone())),
        (Method::POST, format!("/v1/users/{id}/mfa/totp/confirm"), Some(session.clone())),
        (Method::POST, "/v1/auth/login".into(), None),
        (Method::POST, "/v1/auth/mfa/verify".into(), None),
        (Method::POST, "/v1/auth/logout-all".into(), Some(session)),
        (Method::POST, "/v1/clients".into(), Some(ADMIN_TOKEN.into())),
    ]
}

async fn send(
    app: &TestApp,
    method: &Method,
    path: &str,
    bearer: &Option<String>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let r = app.request(method.clone(), path, bearer.as_deref()).header("content-type", content_type).body(body).send().await.unwrap();
    let status = r.status();
    let (_, err) = json_of(r).await;
    (status, err["error"].as_str().unwrap_or("<none>").to_string())
}

#[tokio::test]
async fn malformed_bodies_get_4xx_json_errors() {
    let app = TestApp::start().await;
    let oversize = format!("{{\"username\": \"{}\"}}", "x".repeat(70_000)).into_bytes();
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode)> = vec![
        ("malformed JSON", "application/json", b"{\"username\": ".to_vec(), StatusCode::BAD_REQUEST),
        ("not an object", "application/json", b"[1,2,3]".to_vec(), StatusCode::BAD_REQUEST),
        ("unknown field", "application/json", br#"{"username":"a","password":"b","email":"c","admin":true,"user_id":"x","code":"1","mfa_token":"x","new_password":"x","name":"x","grant_types":[],"bogus":1}"#.to_vec(), StatusCode::BAD_REQUEST),
        ("bad UTF-8", "application/json", b"{\"username\": \"\xff\xfe\"}".to_vec(), StatusCode::BAD_REQUEST),
        ("wrong content type", "text/plain", b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("oversize", "application/json", oversize, StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (method, path, bearer) in json_endpoints(&app).await {
        for (what, ct, body, expected) in &cases {
            let (status, code) = send(&app, &method, &path, &bearer, ct, body.clone()).await;
            assert_eq!(status, *expected, "{what} on {method} {path}");
            assert_eq!(code, "invalid_request", "{what} on {method} {path}");
        }
    }
}

#[tokio::test]
async fn missing_or_garbage_auth_is_401_json() {
    let app = TestApp::start().await;
    let id = app.create_user("alice").await;
    let protected = [
        (Method::GET, "/v1/users".to_string()),
        (Method::POST, "/v1/users".to_string()),
        (Method::GET, format!("/v1/users/{id}")),
        (Method::PATCH, format!("/v1/users/{id}")),
        (Method::DELETE, format!("/v1/users/{id}")),
        (Method::POST, format!("/v1/users/{id}/password")),
        (Method::POST, format!("/v1/users/{id}/mfa/totp")),
        (Method::POST, "/v1/auth/logout".to_string()),
        (Method::POST, "/v1/auth/logout-all".to_string()),
        (Method::GET, "/v1/auth/session".to_string()),
        (Method::POST, "/v1/clients".to_string()),
        (Method::GET, "/v1/userinfo".to_string()),
        (Method::GET, "/v1/audit-logs".to_string()),
    ];
    let garbage: [Option<&[u8]>; 5] =
        [None, Some(b"Bearer"), Some(b"Bearer qst_notatoken"), Some(b"Basic Zm9vOmJhcg=="), Some(b"Bearer \xff\xfe")];
    for (method, path) in &protected {
        for auth in garbage {
            let mut r = app.http.request(method.clone(), app.url(path)).header("content-type", "application/json").body("{}");
            if let Some(a) = auth {
                r = r.header("authorization", reqwest::header::HeaderValue::from_bytes(a).unwrap());
            }
            let r = r.send().await.unwrap();
            let status = r.status();
            let (_, body) = json_of(r).await;
            // Authentication is checked before the body, so every case is a 401.
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {auth:?}: {body}");
            assert_eq!(body["error"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn form_endpoints_reject_bad_bodies() {
    let app = TestApp::start().await;
    let client = app.create_client(&["client_credentials"], &["read"]).await;
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
            ("application/json", b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("application/x-www-form-urlencoded", b"token=\xff\xfe".to_vec(), StatusCode::BAD_REQUEST),
            ("application/x-www-form-urlencoded", b"grant_type=a&grant_type=b&token=a&token=b".to_vec(), StatusCode::BAD_REQUEST),
            ("application/x-www-form-urlencoded", vec![b'a'; 70_000], StatusCode::PAYLOAD_TOO_LARGE),
        ];
        for (ct, body, expected) in cases {
            let r = app
                .http
                .post(app.url(path))
                .basic_auth(&client.0, Some(&client.1))
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let (_, err) = json_of(r).await;
            assert_eq!(status, expected, "{path} {ct}: {err}");
            assert_eq!(err["error"], "invalid_request");
        }
        // Garbage client credentials.
        let r = app
            .http
            .post(app.url(path))
            .header("authorization", "Basic !!!")
            .form(&[("token", "x"), ("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "invalid_client");
    }
}

#[tokio::test]
async fn unknown_routes_methods_and_ids() {
    let app = TestApp::start().await;
    assert_eq!(error_of(app.get("/v2/nothing", None).await, StatusCode::NOT_FOUND).await, "not_found");
    let r = app.request(Method::PUT, "/v1/auth/login", None).send().await.unwrap();
    assert_eq!(error_of(r, StatusCode::METHOD_NOT_ALLOWED).await, "invalid_request");
    for id in ["not-a-uuid", "1", "%00", "00000000-0000-0000-0000-00000000000g"] {
        let r = app.get(&format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).await;
        assert_eq!(error_of(r, StatusCode::NOT_FOUND).await, "not_found", "{id}");
    }
    // Over-long and odd credentials in JSON fields are plain failures, not errors.
    let long = "x".repeat(10_000);
    let r = app.post_json("/v1/auth/login", None, json!({"username": long, "password": long})).await;
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "invalid_credentials");
    let r = app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": "qmt_x", "code": "123"})).await;
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
    // A NUL is refused before anything else looks at the body (see nul_bytes_are_refused_before_sql).
    let r = app.post_json("/v1/auth/mfa/verify", None, json!({"mfa_token": "qmt_x", "code": "\u{0}"})).await;
    assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request");
}

/// PostgreSQL refuses NUL in text, so a NUL that reached SQL used to be a 500 (some of
/// them without authentication). Every text input is checked before any query: the
/// answer is `400 invalid_request`, or the endpoint's own error.
#[tokio::test]
async fn nul_bytes_are_refused_before_sql() {
    use quantaid_backend::security::token::{generate, TokenKind};
    let app = TestApp::start().await;
    app.create_user("alice").await;
    let client = app.create_client(&["client_credentials", "password"], &["read"]).await;
    // Checksum-valid but unknown: gets past the format check to the client lookup.
    let forged = generate(TokenKind::ClientSecret, chrono::Utc::now());
    let nul = "a\u{0}b";

    // JSON bodies (the NUL arrives as a \u0000 escape).
    let json_cases = [
        ("/v1/auth/login", None, json!({"username": nul, "password": "x"})),
        ("/v1/auth/login", None, json!({"username": "alice", "password": nul})),
        ("/v1/auth/mfa/verify", None, json!({"mfa_token": nul, "code": "123456"})),
        ("/v1/users", Some(ADMIN_TOKEN), json!({"username": nul, "email": "x@example.com", "password": PASSWORD})),
        ("/v1/clients", Some(ADMIN_TOKEN), json!({"name": nul, "grant_types": ["client_credentials"]})),
        (
            "/v1/clients",
            Some(ADMIN_TOKEN),
            json!({"name": "n", "grant_types": ["client_credentials"], "redirect_uris": [format!("https://x/{nul}")]}),
        ),
        ("/v1/clients", Some(ADMIN_TOKEN), json!({"name": "n", "grant_types": ["client_credentials"], "scopes": [nul]})),
    ];
    for (path, bearer, body) in json_cases {
        let r = app.post_json(path, bearer, body.clone()).await;
        assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request", "{path} {body}");
    }

    // Form bodies: client_id in the body, with a forged secret, and the password grant.
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        let form = [("grant_type", "client_credentials"), ("token", "x"), ("client_id", nul), ("client_secret", forged.as_str())];
        let r = app.post_form(path, None, &form).await;
        assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request", "{path} client_id");
        // Basic client id `a%00b` (RFC 6749 form-encodes it inside Basic).
        let r = app.post_form(path, Some(("a%00b", &forged)), &[("grant_type", "client_credentials"), ("token", "x")]).await;
        assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "invalid_client", "{path} Basic");
    }
    let grant = [("grant_type", "password"), ("username", nul), ("password", "x")];
    let r = app.post_form("/oauth/token", Some((&client.0, &client.1)), &grant).await;
    assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request", "password grant username");

    // Query strings.
    for q in ["action=%00", "action=login%00", "cursor=%00"] {
        let r = app.get(&format!("/v1/audit-logs?{q}"), Some(ADMIN_TOKEN)).await;
        assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request", "{q}");
    }
}
