//! The requests the benchmark sends, one function per endpoint. Each returns `Ok` only
//! for the answer a real client would accept; anything else is an error of some kind.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::load::error_kind;

/// A keep-alive HTTP client for one backend, with the admin token and (once seeded)
/// the OAuth client's credentials.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Arc<str>,
    admin_token: Arc<str>,
    pub client: Option<Arc<(String, String)>>,
}

pub const PASSWORD: &str = "bench correct horse battery";

impl Api {
    pub fn new(base: &str, admin_token: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .no_proxy() // loopback only, whatever the environment says
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .timeout(Duration::from_secs(30)) // bounds every request, so every loop ends
            .build()?;
        Ok(Api { http, base: base.into(), admin_token: admin_token.into(), client: None })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn client_credentials(&self) -> (&str, &str) {
        let c = self.client.as_ref().expect("the OAuth client is seeded first");
        (&c.0, &c.1)
    }

    /// `POST /v1/users` (admin).
    pub async fn create_user(&self, username: &str) -> anyhow::Result<()> {
        let body = json!({"username": username, "email": format!("{username}@bench.example"), "password": PASSWORD});
        let r = self.http.post(self.url("/v1/users")).bearer_auth(&*self.admin_token).json(&body).send().await?;
        if r.status() != StatusCode::CREATED {
            bail!("POST /v1/users: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// `POST /v1/clients` (admin): one confidential client for `client_credentials` and
    /// `password` with scope `read`. Returns `(client_id, client_secret)`.
    pub async fn create_client(&self) -> anyhow::Result<(String, String)> {
        let body = json!({"name": "quantaid-bench", "grant_types": ["client_credentials", "password"], "scopes": ["read"]});
        let r = self.http.post(self.url("/v1/clients")).bearer_auth(&*self.admin_token).json(&body).send().await?;
        if r.status() != StatusCode::CREATED {
            bail!("POST /v1/clients: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        let v: Value = r.json().await?;
        let field = |k: &str| v[k].as_str().map(str::to_owned).with_context(|| format!("POST /v1/clients: no {k}"));
        Ok((field("client_id")?, field("client_secret")?))
    }

    /// `POST /v1/auth/login`: `200` with a session token.
    pub async fn login(&self, username: &str) -> Result<(), String> {
        let body = json!({"username": username, "password": PASSWORD});
        let r = self.http.post(self.url("/v1/auth/login")).json(&body).send().await.map_err(|e| error_kind(&e))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| error_kind(&e))?; // drain, so the connection is reused
        if status != StatusCode::OK {
            return Err(format!("status {}", status.as_u16()));
        }
        if !contains(&body, b"\"session_token\"") {
            return Err("no session_token".into());
        }
        Ok(())
    }

    /// `POST /oauth/token`, `client_credentials` with HTTP Basic: the access token.
    pub async fn issue_token(&self) -> Result<String, String> {
        let (id, secret) = self.client_credentials();
        let r = self
            .http
            .post(self.url("/oauth/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "read")])
            .send()
            .await
            .map_err(|e| error_kind(&e))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| error_kind(&e))?;
        if status != StatusCode::OK {
            return Err(format!("status {}", status.as_u16()));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| "bad JSON".to_string())?;
        v["access_token"].as_str().map(str::to_owned).ok_or_else(|| "no access_token".into())
    }

    /// `POST /oauth/introspect` of a live token: `200 {"active": true, ...}`.
    pub async fn introspect(&self, token: &str) -> Result<(), String> {
        let (id, secret) = self.client_credentials();
        let r = self
            .http
            .post(self.url("/oauth/introspect"))
            .basic_auth(id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .map_err(|e| error_kind(&e))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| error_kind(&e))?;
        if status != StatusCode::OK {
            return Err(format!("status {}", status.as_u16()));
        }
        // A live token reported inactive would be a wrong answer, not a slow one.
        if !contains(&body, b"\"active\":true") {
            return Err("inactive token".into());
        }
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
