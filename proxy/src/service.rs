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
use quantaid_protocol::forwarded;
use quantaid_runtime::telemetry::{continue_trace, new_trace_id, outgoing_span_id, parse_traceparent};

use crate::config::Config;
use crate::lookup::Lookups;
use crate::metrics::METRICS;
use crate::respond::{respond, respond_error, unavailable};
use crate::routes::{classify, Route};

pub struct QuantaProxy {
    pub lookups: Arc<Lookups>,
    pub config: Arc<Config>,
}

/// Per-request state.
pub struct RequestCtx {
    pub(crate) started: Instant,
    pub(crate) template: &'static str,
    pub(crate) trace_id: String,
    /// The `traceparent` this hop sends to the backend.
    pub(crate) traceparent: HeaderValue,
    /// This hop's span: exported over OTLP when that is on; ends with the request.
    pub(crate) span: tracing::Span,
    pub(crate) status: u16,
    /// The request's body must be in by then (`QUANTAID_PROXY_BODY_TIMEOUT_MS`).
    pub(crate) body_deadline: Instant,
    /// Whether a failed connect to the backend was already tried again.
    pub(crate) connect_retried: bool,
}

/// Whether the body deadline still holds; if so, the next read may take what is left.
pub(crate) fn within_body_deadline(session: &mut Session, ctx: &RequestCtx) -> bool {
    let left = ctx.body_deadline.saturating_duration_since(Instant::now());
    session.set_read_timeout(Some(left));
    !left.is_zero()
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
        // The connection is not reused after this answer (below), so the answer must say
        // so: a pooled client would otherwise send its next request into a closing socket.
        session.set_keepalive(None);
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
