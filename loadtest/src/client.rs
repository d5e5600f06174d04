//! The requests the scenarios send, one function per endpoint, each checking the answer
//! the way a real client would: `Ok` only for the response that client could use, and
//! otherwise the kind of failure (for the report's failure breakdown).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

/// Every seeded user has this password: load-test data on a throwaway local stack.
pub const PASSWORD: &str = "loadtest correct horse battery";

/// A request that takes longer than this counts as a hang (failure `timeout`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An OAuth client the seed created.
#[derive(Clone, Debug)]
pub struct OAuthClient {
    pub id: String,
    pub secret: String,
}

/// A keep-alive HTTP client for the service under test (the proxy on :8080).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Arc<str>,
}

/// A logged-in user's session.
pub struct Session {
    pub token: String,
    pub user_id: String,
}

fn kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        format!("transport ({})", transport_cause(e))
    }
}

/// What broke a connection under a request, from a closed set (report keys stay few):
/// the server closed it before the answer was complete, reset it, or something else.
fn transport_cause(e: &reqwest::Error) -> &'static str {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionReset => "reset",
                std::io::ErrorKind::BrokenPipe => "broken pipe",
                std::io::ErrorKind::UnexpectedEof => "closed",
                _ => "io",
            };
        }
        if cause.to_string().contains("connection closed before message completed") {
            return "closed before the answer";
        }
        source = cause.source();
    }
    "other"
}

fn unexpected(status: StatusCode) -> String {
    format!("status {}", status.as_u16())
}

/// The response's status and body (read whole, so the connection is reused).
async fn read(r: Result<Response, reqwest::Error>) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), String> {
    let r = r.map_err(|e| kind(&e))?;
    let (status, headers) = (r.status(), r.headers().clone());
    let body = r.bytes().await.map_err(|e| kind(&e))?;
    Ok((status, headers, body.to_vec()))
}

fn json_field(body: &[u8], field: &str) -> Result<String, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "bad JSON".to_string())?;
    v[field].as_str().map(str::to_owned).ok_or_else(|| format!("no {field}"))
}

/// How the service answered a token request when it may shed load.
pub enum TokenAnswer {
    Issued,
    /// `503 {"error":"temporarily_unavailable"}` with `Retry-After`: load shed as documented.
    Shed,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .no_proxy() // loopback only, whatever the environment says
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Api { http, base: base.trim_end_matches('/').into() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /v1/users` (admin), with [`PASSWORD`].
    pub async fn create_user(&self, admin_token: &str, username: &str) -> anyhow::Result<()> {
        let body = json!({"username": username, "email": format!("{username}@loadtest.example"), "password": PASSWORD});
        let r = self.http.post(self.url("/v1/users")).bearer_auth(admin_token).json(&body).send().await?;
        if r.status() != StatusCode::CREATED {
            bail!("POST /v1/users: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// `POST /v1/clients` (admin): a confidential `client_credentials` client.
    pub async fn create_client(&self, admin_token: &str, name: &str) -> anyhow::Result<OAuthClient> {
        let body = json!({"name": name, "grant_types": ["client_credentials"], "scopes": ["read"], "redirect_uris": []});
        let r = self.http.post(self.url("/v1/clients")).bearer_auth(admin_token).json(&body).send().await?;
        if r.status() != StatusCode::CREATED {
            bail!("POST /v1/clients: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        let v: Value = r.json().await?;
        let field = |k: &str| v[k].as_str().map(str::to_owned).with_context(|| format!("POST /v1/clients: no {k}"));
        Ok(OAuthClient { id: field("client_id")?, secret: field("client_secret")? })
    }

    /// `POST /v1/auth/login` → `200` with a session.
    pub async fn login(&self, username: &str) -> Result<Session, String> {
        let body = json!({"username": username, "password": PASSWORD});
        let (status, _, body) = read(self.http.post(self.url("/v1/auth/login")).json(&body).send().await).await?;
        if status != StatusCode::OK {
            return Err(unexpected(status));
        }
        Ok(Session { token: json_field(&body, "session_token")?, user_id: json_field(&body, "user_id")? })
    }

    /// Sends `method path` with the session as bearer credential; `Ok` only with `expected`.
    async fn as_session(
        &self,
        method: Method,
        path: &str,
        session: &Session,
        expected: StatusCode,
    ) -> Result<(HeaderMap, Vec<u8>), String> {
        let request = self.http.request(method, self.url(path)).bearer_auth(&session.token);
        let (status, headers, body) = read(request.send().await).await?;
        if status != expected {
            return Err(unexpected(status));
        }
        Ok((headers, body))
    }

    /// `GET /v1/auth/check` (forward auth) → `200` naming the session's user.
    pub async fn check(&self, session: &Session) -> Result<(), String> {
        let (headers, _) = self.as_session(Method::GET, "/v1/auth/check", session, StatusCode::OK).await?;
        match headers.get("x-quantaid-user-id") {
            Some(v) if v.as_bytes() == session.user_id.as_bytes() => Ok(()),
            _ => Err("wrong X-Quantaid-User-Id".into()),
        }
    }

    /// `GET /v1/auth/session` → `200` with the session's user.
    pub async fn session(&self, session: &Session) -> Result<(), String> {
        let (_, body) = self.as_session(Method::GET, "/v1/auth/session", session, StatusCode::OK).await?;
        if json_field(&body, "user_id")? != session.user_id {
            return Err("wrong user_id".into());
        }
        Ok(())
    }

    /// `POST /v1/auth/logout` → `204`.
    pub async fn logout(&self, session: &Session) -> Result<(), String> {
        self.as_session(Method::POST, "/v1/auth/logout", session, StatusCode::NO_CONTENT).await.map(|_| ())
    }

    /// `POST /oauth/token`, `client_credentials` with HTTP Basic → `200` with a token,
    /// or a documented load-shedding `503`.
    pub async fn token(&self, client: &OAuthClient) -> Result<TokenAnswer, String> {
        let request = self
            .http
            .post(self.url("/oauth/token"))
            .basic_auth(&client.id, Some(&client.secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "read")]);
        let (status, headers, body) = read(request.send().await).await?;
        match status {
            StatusCode::OK => json_field(&body, "access_token").map(|_| TokenAnswer::Issued),
            StatusCode::SERVICE_UNAVAILABLE => retry_later(&headers, &body).map(|()| TokenAnswer::Shed),
            other => Err(unexpected(other)),
        }
    }
}

/// How the service answered a revocation (`/oauth/revoke`, logout, logout-all).
#[derive(Debug, PartialEq, Eq)]
pub enum Revoked {
    /// 2xx: from now on no replica may call the credential valid.
    Done,
    /// `503 temporarily_unavailable` with `Retry-After`: the change may be committed but
    /// is not yet visible to every cache; the client retries (docs/caching.md).
    RetryLater,
    /// `401`: the credential was no longer valid (e.g. a retried logout whose first
    /// attempt committed).
    AlreadyGone,
}

/// A documented load-shedding 503, or the failure it is not.
fn retry_later(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    if json_field(body, "error").as_deref() != Ok("temporarily_unavailable") {
        Err("503 without temporarily_unavailable".into())
    } else if !headers.contains_key("retry-after") {
        Err("503 without Retry-After".into())
    } else {
        Ok(())
    }
}

fn revocation_answer(status: StatusCode, headers: &HeaderMap, body: &[u8], done: StatusCode) -> Result<Revoked, String> {
    match status {
        s if s == done => Ok(Revoked::Done),
        StatusCode::SERVICE_UNAVAILABLE => retry_later(headers, body).map(|()| Revoked::RetryLater),
        StatusCode::UNAUTHORIZED => Ok(Revoked::AlreadyGone),
        other => Err(unexpected(other)),
    }
}

impl Api {
    /// `POST /oauth/token` (`client_credentials`) → the access token.
    pub async fn issue(&self, client: &OAuthClient) -> Result<String, String> {
        let request = self
            .http
            .post(self.url("/oauth/token"))
            .basic_auth(&client.id, Some(&client.secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "read")]);
        let (status, _, body) = read(request.send().await).await?;
        if status != StatusCode::OK {
            return Err(unexpected(status));
        }
        json_field(&body, "access_token")
    }

    /// `POST /oauth/introspect` → whether the token is active.
    pub async fn introspect(&self, client: &OAuthClient, token: &str) -> Result<bool, String> {
        let request = self.http.post(self.url("/oauth/introspect")).basic_auth(&client.id, Some(&client.secret)).form(&[("token", token)]);
        let (status, _, body) = read(request.send().await).await?;
        if status != StatusCode::OK {
            return Err(unexpected(status));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| "bad JSON".to_string())?;
        v["active"].as_bool().ok_or_else(|| "no active".to_string())
    }

    /// `GET /v1/auth/session` → whether the session is valid (`200` for it, `401` not).
    pub async fn session_valid(&self, session: &Session) -> Result<bool, String> {
        let request = self.http.get(self.url("/v1/auth/session")).bearer_auth(&session.token);
        let (status, _, body) = read(request.send().await).await?;
        match status {
            StatusCode::OK if json_field(&body, "user_id")? == session.user_id => Ok(true),
            StatusCode::OK => Err("wrong user_id".into()),
            StatusCode::UNAUTHORIZED => Ok(false),
            other => Err(unexpected(other)),
        }
    }

    /// `POST /oauth/revoke` (RFC 7009) → `200`.
    pub async fn revoke(&self, client: &OAuthClient, token: &str) -> Result<Revoked, String> {
        let request = self.http.post(self.url("/oauth/revoke")).basic_auth(&client.id, Some(&client.secret)).form(&[("token", token)]);
        let (status, headers, body) = read(request.send().await).await?;
        revocation_answer(status, &headers, &body, StatusCode::OK)
    }

    /// `POST /v1/auth/logout` or `/v1/auth/logout-all` with the session → `204`.
    pub async fn end_sessions(&self, session: &Session, all: bool) -> Result<Revoked, String> {
        let path = if all { "/v1/auth/logout-all" } else { "/v1/auth/logout" };
        let request = self.http.post(self.url(path)).bearer_auth(&session.token);
        let (status, headers, body) = read(request.send().await).await?;
        revocation_answer(status, &headers, &body, StatusCode::NO_CONTENT)
    }
}
