//! The HTTP calls tests make to set things up, at any base URL: the backend itself or a
//! proxy replica in front of it (which passes them on). Each asserts success, so a
//! broken set-up fails at the call that broke rather than later.

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::{ADMIN_TOKEN, PASSWORD};

/// Creates a user with [`PASSWORD`] as the admin; returns its id.
pub async fn create_user(http: &reqwest::Client, base: &str, username: &str) -> String {
    let body = json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD});
    let r = http.post(format!("{base}/v1/users")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    let (status, user) = json_of(r).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    user["id"].as_str().unwrap().to_string()
}

/// Logs in (no MFA); returns the session token.
pub async fn login(http: &reqwest::Client, base: &str, username: &str, password: &str) -> String {
    let body = json!({"username": username, "password": password});
    let (status, body) = json_of(http.post(format!("{base}/v1/auth/login")).json(&body).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["session_token"].as_str().unwrap().to_string()
}

/// Registers a client as the admin; returns `(client_id, client_secret)`.
pub async fn create_client(http: &reqwest::Client, base: &str, grants: &[&str], scopes: &[&str]) -> (String, String) {
    let body = json!({"name": "test client", "grant_types": grants, "scopes": scopes, "redirect_uris": []});
    let r = http.post(format!("{base}/v1/clients")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    let (status, c) = json_of(r).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    (c["client_id"].as_str().unwrap().to_string(), c["client_secret"].as_str().unwrap().to_string())
}

/// The whole text of a Prometheus `/metrics` page.
pub async fn metrics_text(http: &reqwest::Client, metrics_url: &str) -> String {
    http.get(metrics_url).send().await.unwrap().text().await.unwrap()
}

/// The value of one sample on a `/metrics` page, e.g.
/// `quantaid_logins_total{result="success"}`; 0 when the series is absent.
pub async fn metric(http: &reqwest::Client, metrics_url: &str, sample: &str) -> f64 {
    metrics_text(http, metrics_url)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .unwrap_or(0.0)
}

/// Status and JSON body; panics (failing the test) on a non-JSON body.
pub async fn json_of(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body with {status}: {text:?}"));
    (status, body)
}

/// Asserts the RFC 6749 error shape and returns the code.
pub async fn error_of(r: Response, expected: StatusCode) -> String {
    let (status, body) = json_of(r).await;
    assert_eq!(status, expected, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body["error"].as_str().expect("error code").to_string()
}
