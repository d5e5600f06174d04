//! The Pingora HTTP service: cached lookups answered here, everything else proxied to
//! the identity backend with trace context and the client's address.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorSource;
use quantaid_protocol::cache::hex_digest;
use quantaid_protocol::credential::presented_credential;
use quantaid_protocol::forwarded;
use quantaid_protocol::introspection::{Introspector, INTROSPECTOR_HEADER};
use quantaid_protocol::oauth_form::{content_type_is, presented_client, ClientAuthError, Form, FORM_CONTENT_TYPE};
use quantaid_protocol::telemetry::{continue_trace, new_trace_id, outgoing_span_id, parse_traceparent};
use quantaid_protocol::token::{self, TokenKind};
use quantaid_protocol::wire::{ErrorBody, Introspection, SessionView};

use crate::backend::Unavailable;
use crate::config::Config;
use crate::lookup::{found, Answer, Lookups};
use crate::metrics::METRICS;
use crate::routes::{classify, Route};

pub struct QuantaProxy {
    pub lookups: Arc<Lookups>,
    pub config: Arc<Config>,
}

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    template: &'static str,
    trace_id: String,
    /// The `traceparent` this hop sends to the backend.
    traceparent: HeaderValue,
    /// This hop's span: exported over OTLP when that is on; ends with the request.
    span: tracing::Span,
    status: u16,
    /// The request's body must be in by then (`QUANTAID_PROXY_BODY_TIMEOUT_MS`).
    body_deadline: Instant,
    /// Whether a failed connect to the backend was already tried again.
    connect_retried: bool,
}

/// The caller's bearer credential, by the rule the backend uses too.
fn bearer(session: &Session) -> Option<String> {
    presented_credential(&session.req_header().headers).map(str::to_string)
}

/// One response: a JSON body (or none) with the given status and extra headers.
async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: Option<Bytes>,
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 3))?;
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        resp.insert_header("content-type", "application/json")?;
    }
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    for (name, value) in headers {
        resp.insert_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(resp), body.is_empty()).await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    ctx.status = status.as_u16();
    Ok(true)
}

fn error_body(code: &str, description: &str) -> Option<Bytes> {
    Some(Bytes::from(ErrorBody { error: code, error_description: description }.to_json()))
}

async fn respond_error(session: &mut Session, ctx: &mut RequestCtx, status: StatusCode, code: &str, description: &str) -> Result<bool> {
    let headers: Vec<(&'static str, String)> = match status {
        StatusCode::UNAUTHORIZED => vec![("www-authenticate", "Bearer realm=\"quantaid\"".into())],
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => vec![("retry-after", "1".into())],
        _ => vec![],
    };
    respond(session, ctx, status, &headers, error_body(code, description)).await
}

async fn unavailable(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    respond_error(
        session,
        ctx,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the identity backend is not answering; retry shortly",
    )
    .await
}

impl QuantaProxy {
    async fn session_lookup(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(credential) = bearer(session) else {
            return respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "missing session token").await;
        };
        match self.lookups.session(&credential, Some(&ctx.traceparent)).await {
            Ok(Answer::Found(body)) => respond(session, ctx, StatusCode::OK, &[], Some(Bytes::from(body.to_string()))).await,
            Ok(_) => respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired session").await,
            Err(Unavailable) => unavailable(session, ctx).await,
        }
    }

    /// `GET /v1/auth/check`: 200 with identity headers, or 401 with
    /// `WWW-Authenticate`, the shape NGINX `auth_request`, Traefik ForwardAuth and Envoy
    /// `ext_authz` expect.
    async fn check(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let credential = bearer(session).unwrap_or_default();
        let trace = Some(&ctx.traceparent);
        // (user id, client id, scopes) of the credential; `None` if it is not valid.
        let identity: std::result::Result<Option<[String; 3]>, Unavailable> = match token::parse(&credential).map(|t| t.kind) {
            Some(TokenKind::Session) => self.lookups.session(&credential, trace).await.and_then(|answer| {
                found::<SessionView>(answer).map(|view| view.map(|v| [v.user_id.to_string(), String::new(), String::new()]))
            }),
            Some(TokenKind::Access) => self.lookups.token(&credential, trace).await.and_then(|answer| {
                found::<Introspection>(answer).map(|token| {
                    token.map(|t| {
                        [t.user_id().unwrap_or_default().to_string(), t.client_id.unwrap_or_default(), t.scope.unwrap_or_default()]
                    })
                })
            }),
            _ => Ok(None),
        };
        let [user, client, scopes] = match identity {
            Ok(Some(identity)) => identity,
            Ok(None) => {
                return respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired credentials").await
            }
            Err(Unavailable) => return unavailable(session, ctx).await,
        };
        let headers = [("x-quantaid-user-id", user), ("x-quantaid-client-id", client), ("x-quantaid-scopes", scopes)];
        respond(session, ctx, StatusCode::OK, &headers, None).await
    }

    /// `GET /v1/users/{id}`: the caller is checked from the cache first, then the user.
    async fn user(&self, session: &mut Session, ctx: &mut RequestCtx, raw_id: &str) -> Result<bool> {
        let Some(credential) = bearer(session) else {
            return respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "missing bearer credentials").await;
        };
        let caller = match self.lookups.caller(&credential, Some(&ctx.traceparent)).await {
            Ok(Some(caller)) => caller,
            Ok(None) => {
                return respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired credentials").await
            }
            Err(Unavailable) => return unavailable(session, ctx).await,
        };
        let Ok(id) = uuid::Uuid::parse_str(raw_id) else {
            return respond_error(session, ctx, StatusCode::NOT_FOUND, "not_found", "no such user").await;
        };
        if !caller.principal().may_read_user(id) {
            return respond_error(session, ctx, StatusCode::FORBIDDEN, "forbidden", "not allowed to read this user").await;
        }
        let authorization = HeaderValue::from_str(&format!("Bearer {credential}")).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
        match self.lookups.user(id, &authorization, Some(&ctx.traceparent)).await {
            Ok(Answer::Found(body)) => respond(session, ctx, StatusCode::OK, &[], Some(Bytes::from(body.to_string()))).await,
            Ok(Answer::NotFound) => respond_error(session, ctx, StatusCode::NOT_FOUND, "not_found", "no such user").await,
            Ok(Answer::Refused(status, body)) => respond(session, ctx, status, &[], Some(Bytes::from(body.to_string()))).await,
            // Only introspection checks a remembered client; a user read has none.
            Ok(Answer::CallerStale) | Err(Unavailable) => unavailable(session, ctx).await,
        }
    }

    /// `POST /oauth/introspect`: the client credentials and the token, both from the
    /// cache when possible.
    async fn introspect(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if !content_type_is(&session.req_header().headers, FORM_CONTENT_TYPE) {
            let description = format!("Content-Type must be {FORM_CONTENT_TYPE}");
            return respond_error(session, ctx, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request", &description).await;
        }
        let mut body = Vec::new();
        loop {
            let chunk = match session.read_request_body().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) if matches!(e.etype(), ErrorType::ReadTimedout) => return body_too_slow(session, ctx).await,
                Err(e) => return Err(e),
            };
            body.extend_from_slice(&chunk);
            if body.len() > self.config.max_body_bytes {
                return respond_error(session, ctx, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "request body is too large").await;
            }
            if !within_body_deadline(session, ctx) {
                return body_too_slow(session, ctx).await;
            }
        }
        let Ok(text) = std::str::from_utf8(&body) else {
            return respond_error(session, ctx, StatusCode::BAD_REQUEST, "invalid_request", "request body is not valid UTF-8").await;
        };
        let form = match Form::parse(text) {
            Ok(form) => form,
            Err(e) => return respond_error(session, ctx, StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()).await,
        };
        let challenge = [("www-authenticate", "Basic realm=\"quantaid\"".to_string())];
        let client = match presented_client(&session.req_header().headers, &form) {
            Ok(client) => client,
            Err(e @ (ClientAuthError::TwoMethods | ClientAuthError::MissingClientId)) => {
                return respond_error(session, ctx, StatusCode::BAD_REQUEST, "invalid_request", e.description()).await
            }
            Err(e @ (ClientAuthError::Missing | ClientAuthError::Malformed)) => {
                return respond(session, ctx, StatusCode::UNAUTHORIZED, &challenge, error_body("invalid_client", e.description())).await
            }
        };
        let Some(presented) = form.get("token").map(str::to_string) else {
            return respond_error(session, ctx, StatusCode::BAD_REQUEST, "invalid_request", "missing parameter token").await;
        };
        // The credentials as presented name them in this replica's memory (by digest);
        // the client id they claim names its lifecycle marker.
        let client_id = client.client_id.clone();
        let client_key = hex_digest(&format!("{}:{}", client.client_id, client.secret));
        if let Some(verified) = self.lookups.verified_client(&client_key) {
            let inactive = || Some(Bytes::from_static(b"{\"active\":false}"));
            match self.lookups.token_as(&presented, Some(&verified), Some(&ctx.traceparent)).await {
                Ok(Answer::Found(body)) => {
                    // The same rule as the backend's (quantaid_protocol::introspection).
                    let Ok(full) = serde_json::from_str::<Introspection>(&body) else { return unavailable(session, ctx).await };
                    let shown = if verified.introspector.may_see(&full) { Some(Bytes::from(body.to_string())) } else { inactive() };
                    return respond(session, ctx, StatusCode::OK, &[], shown).await;
                }
                // The client changed since its credentials were verified: ask the backend.
                Ok(Answer::CallerStale) => self.lookups.forget_client(&client_key),
                Ok(_) => return respond(session, ctx, StatusCode::OK, &[], inactive()).await,
                Err(Unavailable) => return unavailable(session, ctx).await,
            }
        }
        // Unknown client credentials: the backend checks them, on the caller's own
        // request. The client's marker is read first, so a change that lands while the
        // backend checks still makes the remembered credentials stale.
        let marker = self.lookups.client_marker(&client_id).await;
        let mut headers = http::HeaderMap::new();
        for name in [http::header::AUTHORIZATION, http::header::CONTENT_TYPE] {
            if let Some(v) = session.req_header().headers.get(&name) {
                headers.insert(name, v.clone());
            }
        }
        match self.lookups.backend.introspect_as_caller(headers, Bytes::from(body), Some(&ctx.traceparent)).await {
            Ok(reply) => {
                let status = reply.status;
                let body = reply.body.clone();
                let introspector =
                    reply.headers.get(INTROSPECTOR_HEADER).and_then(|v| v.to_str().ok()).and_then(Introspector::from_header_value);
                if let (StatusCode::OK, Some(introspector)) = (status, introspector) {
                    // A caller that may not see every token can get an inactive answer
                    // for a live token: that one is not the token's answer, not cached.
                    let complete =
                        serde_json::from_slice::<Introspection>(&body).is_ok_and(|answer| introspector.answer_is_complete(&answer));
                    if complete {
                        self.lookups.fill_token_from(&presented, reply).await;
                    }
                    if let Some(marker) = marker.filter(|_| introspector.client_id == client_id) {
                        self.lookups.remember_client(client_key, introspector, marker);
                    }
                }
                let extra: Vec<(&'static str, String)> =
                    if status == StatusCode::UNAUTHORIZED { vec![("www-authenticate", "Basic realm=\"quantaid\"".into())] } else { vec![] };
                respond(session, ctx, status, &extra, Some(body)).await
            }
            Err(Unavailable) => unavailable(session, ctx).await,
        }
    }
}

/// One form-encoded value (`+` is a space, `%XX` a byte), as the backend decodes it.
/// Whether the body deadline still holds; if so, the next read may take what is left.
fn within_body_deadline(session: &mut Session, ctx: &RequestCtx) -> bool {
    let left = ctx.body_deadline.saturating_duration_since(Instant::now());
    session.set_read_timeout(Some(left));
    !left.is_zero()
}

async fn body_too_slow(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    session.set_keepalive(None);
    respond_error(session, ctx, StatusCode::REQUEST_TIMEOUT, "invalid_request", "the request body was not received in time").await
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for QuantaProxy {
    type CTX = RequestCtx;

    /// Fresh per-request state; trace context and route are filled in by `request_filter`.
    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            template: "unmatched",
            trace_id: String::new(),
            traceparent: HeaderValue::from_static(""),
            span: tracing::Span::none(),
            status: 0,
            body_deadline: Instant::now() + self.config.body_timeout,
            connect_retried: false,
        }
    }

    /// Answers health, readiness and the cached lookups here. `Ok(true)` means the
    /// response has been written and nothing goes upstream; `Ok(false)` passes the
    /// request on to the backend.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let incoming = session.req_header().headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        let parent_span = match incoming {
            Some((trace, parent)) => {
                ctx.trace_id = trace;
                Some(parent)
            }
            None => {
                ctx.trace_id = new_trace_id();
                None
            }
        };
        ctx.span = tracing::info_span!("proxy_request", trace_id = %ctx.trace_id);
        continue_trace(&ctx.span, &ctx.trace_id, parent_span.as_deref());
        let traceparent = format!("00-{}-{}-01", ctx.trace_id, outgoing_span_id(&ctx.span));
        ctx.traceparent = HeaderValue::from_str(&traceparent).unwrap_or(HeaderValue::from_static(""));

        // The head is in (the gate bounded that); the body gets one overall deadline.
        // Each read may take what is left of it (see `request_body_filter`).
        ctx.body_deadline = Instant::now() + self.config.body_timeout;
        session.set_read_timeout(Some(self.config.body_timeout));

        let (route, template) = classify(&session.req_header().method, session.req_header().uri.path());
        ctx.template = template;
        match route {
            Route::Health => respond(session, ctx, StatusCode::OK, &[], Some(Bytes::from_static(b"{\"status\":\"ok\"}"))).await,
            Route::Ready => {
                // Ready means the backend answers; Redis being down is not unready.
                if self.lookups.backend.healthy().await {
                    respond(session, ctx, StatusCode::OK, &[], Some(Bytes::from_static(b"{\"status\":\"ready\"}"))).await
                } else {
                    unavailable(session, ctx).await
                }
            }
            Route::Session => self.session_lookup(session, ctx).await,
            Route::Check => self.check(session, ctx).await,
            Route::User(id) => self.user(session, ctx, &id).await,
            Route::Introspect => self.introspect(session, ctx).await,
            Route::Internal => respond_error(session, ctx, StatusCode::NOT_FOUND, "not_found", "no such endpoint").await,
            Route::PassThrough => Ok(false),
        }
    }

    /// Every passed-through request goes to the backend in the same pod, over pooled
    /// keep-alive connections, with connect and read timeouts so a stuck backend becomes
    /// a 503 (see `fail_to_proxy`) rather than a hang.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.config.backend_addr, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(1));
        peer.options.total_connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(self.config.backend_timeout);
        peer.options.write_timeout = Some(self.config.backend_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    /// A connect that failed sent nothing, so any request may be tried again: once, as the
    /// backend is in the same pod and a second failure means it is down, not busy.
    fn fail_to_connect(&self, _session: &mut Session, _peer: &HttpPeer, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        if !ctx.connect_retried {
            ctx.connect_retried = true;
            e.set_retry(true);
        }
        e
    }

    /// Adds this hop's `traceparent`; sets `X-Forwarded-For` to the client as this hop
    /// knows it; drops every header only QuantaID's own hops may set.
    async fn upstream_request_filter(&self, session: &mut Session, upstream: &mut RequestHeader, ctx: &mut RequestCtx) -> Result<()> {
        upstream.insert_header("traceparent", ctx.traceparent.clone())?;
        // `X-Quantaid-*` headers are QuantaID's own (forward-auth answers, the backend's
        // hints to this proxy): one a client sent is a forgery, whatever it says.
        let forged: Vec<http::HeaderName> =
            upstream.headers.keys().filter(|name| name.as_str().starts_with("x-quantaid-")).cloned().collect();
        for name in forged {
            upstream.remove_header(&name);
        }
        // The client's address: the peer itself, or, when the peer is a configured
        // trusted ingress, the client that ingress saw. Whatever else the client wrote
        // is dropped, so it cannot choose the address that is throttled and audited.
        let client = client_ip(session).map(|peer| {
            let passed = session.req_header().headers.get_all("x-forwarded-for").iter().map(|v| v.as_bytes());
            forwarded::client_address(peer, passed, &self.config.trusted_ingress)
        });
        for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            upstream.remove_header(name);
        }
        if let Some(client) = client {
            upstream.insert_header("x-forwarded-for", client.to_string())?;
        }
        Ok(())
    }

    /// A passed-through body that trickles in past the body deadline ends the request
    /// (`408`, see `fail_to_proxy`).
    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !end_of_stream && !within_body_deadline(session, ctx) {
            let mut e = Error::explain(ErrorType::ReadTimedout, "request body deadline passed");
            e.as_down();
            return Err(e);
        }
        Ok(())
    }

    /// Notes the backend's status for the access log and metrics.
    async fn response_filter(&self, _session: &mut Session, upstream: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        ctx.status = upstream.status.as_u16();
        Ok(())
    }

    /// A backend that cannot be reached or times out is overload, not denial: `503`
    /// with `Retry-After` and a JSON body (docs/design.md, invariant 7).
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let code = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) => *code,
            (ErrorSource::Upstream, _) => 503,
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => 408,
            (ErrorSource::Downstream, ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed) => 0,
            (ErrorSource::Downstream, _) => 400,
            _ => 500,
        };
        if code > 0 {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (error, description) = match code {
                503 => ("temporarily_unavailable", "the identity backend is not answering; retry shortly"),
                408 => ("invalid_request", "the request body was not received in time"),
                400..=499 => ("invalid_request", "the request could not be read"),
                _ => ("internal", "internal error"),
            };
            if respond_error(session, ctx, status, error, description).await.is_err() {
                tracing::debug!("could not write the error response");
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// Records the request's metrics and access log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(ctx.status);
        let method = session.req_header().method.clone();
        let elapsed = ctx.started.elapsed();
        METRICS.record_request(&method, ctx.template, status, elapsed);
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        let ip = client_ip(session).map(|ip| ip.to_string()).unwrap_or_default();
        let error = e.map(|e| e.to_string());
        let _entered = ctx.span.enter();
        tracing::info!(
            ip_address = %ip,
            method = %method,
            path = ctx.template,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            error,
            "request completed"
        );
    }
}
