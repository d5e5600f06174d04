//! The Pingora HTTP service: cached lookups answered here, everything else proxied to
//! the identity backend with trace context and the client's address.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorSource;
use quantaid_protocol::forwarded;

use crate::config::Config;
use crate::endpoints::Call;
use crate::lookup::Lookups;
use crate::respond::Reply;
use crate::routes::{classify, Route};
use crate::telemetry::{log_request, Trace};

#[derive(Clone)]
pub struct QuantaProxy {
    pub lookups: Arc<Lookups>,
    pub config: Arc<Config>,
}

/// Per-request state.
pub struct RequestCtx {
    pub(crate) started: Instant,
    pub(crate) template: &'static str,
    pub(crate) trace: Trace,
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

impl QuantaProxy {
    /// Reads a request body whole, within the body deadline and the size limit.
    async fn read_body(&self, session: &mut Session, ctx: &RequestCtx) -> Result<std::result::Result<Bytes, Reply>> {
        let mut body = Vec::new();
        loop {
            let chunk = match session.read_request_body().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(Ok(Bytes::from(body))),
                Err(e) if matches!(e.etype(), ErrorType::ReadTimedout) => return Ok(Err(Reply::body_too_slow())),
                Err(e) => return Err(e),
            };
            body.extend_from_slice(&chunk);
            if body.len() > self.config.max_body_bytes {
                return Ok(Err(Reply::body_too_large()));
            }
            if !within_body_deadline(session, ctx) {
                return Ok(Err(Reply::body_too_slow()));
            }
        }
    }
}

/// Writes one of the proxy's own replies through Pingora.
async fn write_reply(session: &mut Session, ctx: &mut RequestCtx, reply: Reply) -> Result<bool> {
    let mut head = ResponseHeader::build(reply.status, Some(reply.headers.len() + 3))?;
    for (name, value) in reply.head_fields() {
        head.insert_header(name, value)?;
    }
    if reply.close {
        session.set_keepalive(None);
    }
    let body = (!reply.body.is_empty()).then_some(reply.body);
    session.write_response_header(Box::new(head), body.is_none()).await?;
    if body.is_some() {
        session.write_response_body(body, true).await?;
    }
    ctx.status = reply.status.as_u16();
    Ok(true)
}

#[async_trait]
impl ProxyHttp for QuantaProxy {
    type CTX = RequestCtx;

    /// Fresh per-request state; trace context and route are filled in by `request_filter`.
    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            template: "unmatched",
            trace: Trace::none(),
            status: 0,
            body_deadline: Instant::now() + self.config.body_timeout,
            connect_retried: false,
        }
    }

    /// Answers health, readiness and the cached lookups here (those that `direct.rs`
    /// handed over: unusual framing). `Ok(true)` means the response has been written
    /// and nothing goes upstream; `Ok(false)` passes the request on to the backend.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.trace = Trace::start(&session.req_header().headers);
        // The head is in (the gate bounded that); the body gets one overall deadline.
        // Each read may take what is left of it (see `request_body_filter`).
        ctx.body_deadline = Instant::now() + self.config.body_timeout;
        session.set_read_timeout(Some(self.config.body_timeout));

        let (route, template) = classify(&session.req_header().method, session.req_header().uri.path());
        ctx.template = template;
        if route == Route::PassThrough {
            return Ok(false);
        }
        let body = if route.reads_body() {
            match self.read_body(session, ctx).await? {
                Ok(body) => body,
                Err(refused) => return write_reply(session, ctx, refused).await,
            }
        } else {
            Bytes::new()
        };
        let headers = session.req_header().headers.clone();
        let call = Call { headers: &headers, body, traceparent: &ctx.trace.traceparent };
        match self.answer(route, call).await {
            Some(reply) => write_reply(session, ctx, reply).await,
            None => Ok(false),
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
        upstream.insert_header("traceparent", ctx.trace.traceparent.clone())?;
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
            let reply = match code {
                503 => Reply::unavailable(),
                408 => Reply::body_too_slow(),
                400..=499 => Reply::error(status, "invalid_request", "the request could not be read"),
                _ => Reply::error(status, "internal", "internal error"),
            };
            if write_reply(session, ctx, reply).await.is_err() {
                tracing::debug!("could not write the error response");
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// Records the request's metrics and access log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(ctx.status);
        let error = e.map(|e| e.to_string());
        log_request(&session.req_header().method, ctx.template, status, ctx.started, client_ip(session), error, &ctx.trace.span);
    }
}
