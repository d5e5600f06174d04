//! Calls from the proxy's cached-lookup path to the identity backend in the same pod.
//! (Pass-through traffic goes through Pingora's own upstream connections instead.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quantaid_protocol::routes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;

use crate::metrics::METRICS;

/// The backend could not answer: timeout, connection failure, or its own 503. The
/// client gets `503` with `Retry-After`, never a denial (docs/design.md, invariant 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub type BackendResult = Result<Reply, Unavailable>;

#[derive(Clone)]
pub struct BackendClient {
    http: reqwest::Client,
    base: String,
    internal_auth: HeaderValue,
}

impl BackendClient {
    pub fn new(addr: SocketAddr, timeout: Duration, internal_token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let mut internal_auth = HeaderValue::from_str(&format!("Bearer {internal_token}"))?;
        internal_auth.set_sensitive(true);
        Ok(BackendClient { http, base: format!("http://{addr}"), internal_auth })
    }

    async fn send(&self, route: &'static str, request: reqwest::RequestBuilder, trace: Option<&HeaderValue>) -> BackendResult {
        let started = Instant::now();
        let request = match trace {
            Some(t) => request.header("traceparent", t.clone()),
            None => request,
        };
        let result = request.send().await;
        let reply = match result {
            Ok(r) => {
                let status = r.status();
                let headers = r.headers().clone();
                match r.bytes().await {
                    Ok(body) => Ok(Reply { status, headers, body }),
                    Err(_) => Err(Unavailable),
                }
            }
            Err(e) => {
                tracing::warn!(route, error = %e, "backend lookup failed");
                Err(Unavailable)
            }
        };
        METRICS.upstream_duration.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
        match reply {
            Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE || r.status.is_server_error() => Err(Unavailable),
            other => other,
        }
    }

    /// `GET /v1/auth/session` with the session token.
    pub async fn session(&self, session_token: &str, trace: Option<&HeaderValue>) -> BackendResult {
        let req = self.http.get(format!("{}{}", self.base, routes::SESSION)).bearer_auth(session_token);
        self.send(routes::SESSION, req, trace).await
    }

    /// Introspection of any token, authenticated as the sidecar (no client credentials).
    pub async fn introspect_internal(&self, token: &str, trace: Option<&HeaderValue>) -> BackendResult {
        let req = self
            .http
            .post(format!("{}{}", self.base, routes::INTERNAL_INTROSPECT))
            .header(AUTHORIZATION, self.internal_auth.clone())
            .form(&[("token", token)]);
        self.send(routes::INTERNAL_INTROSPECT, req, trace).await
    }

    /// The caller's own `POST /oauth/introspect`, forwarded as sent (the backend checks
    /// the client credentials).
    pub async fn introspect_as_caller(&self, headers: HeaderMap, body: Bytes, trace: Option<&HeaderValue>) -> BackendResult {
        let req = self.http.post(format!("{}{}", self.base, routes::INTROSPECT)).headers(headers).body(body);
        self.send(routes::INTROSPECT, req, trace).await
    }

    /// `GET /v1/users/{id}` with the caller's credential.
    pub async fn user(&self, id: &uuid::Uuid, authorization: &HeaderValue, trace: Option<&HeaderValue>) -> BackendResult {
        let req = self.http.get(format!("{}/v1/users/{id}", self.base)).header(AUTHORIZATION, authorization.clone());
        self.send(routes::USER, req, trace).await
    }

    /// The Bloom snapshot, in full or since `since_ms`.
    pub async fn bloom_snapshot(&self, since_ms: Option<i64>) -> BackendResult {
        let mut url = format!("{}{}", self.base, routes::INTERNAL_BLOOM_SNAPSHOT);
        if let Some(since) = since_ms {
            url.push_str(&format!("?since_ms={since}"));
        }
        // A full snapshot can be large: allow it more time than a lookup.
        let req = self.http.get(url).header(AUTHORIZATION, self.internal_auth.clone()).timeout(Duration::from_secs(60));
        self.send(routes::INTERNAL_BLOOM_SNAPSHOT, req, None).await
    }

    /// Liveness of the backend, for the proxy's readiness.
    pub async fn healthy(&self) -> bool {
        let req = self.http.get(format!("{}{}", self.base, routes::HEALTH)).timeout(Duration::from_secs(1));
        matches!(self.send(routes::HEALTH, req, None).await, Ok(r) if r.status.is_success())
    }
}
