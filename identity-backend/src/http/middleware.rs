//! The request middleware: trace context, client IP, request metrics and the access log.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::domain::invalidation;
use crate::error::ApiError;
use crate::http::extract::RequestContext;
use crate::telemetry::{continue_trace, new_trace_id, parse_traceparent};
use crate::SharedState;
use quantaid_protocol::forwarded::{self, IpNet};

/// Nothing a client asks of the backend may take longer than this; a stuck request
/// ends as a 503 rather than holding its connection forever.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// The client's address: the peer, or, when the peer is a trusted proxy, the client it
/// names (the rule, shared with the proxy, is `quantaid_protocol::forwarded`).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    forwarded::client_address(peer, headers.get_all("x-forwarded-for").iter().map(|v| v.as_bytes()), trusted)
}

pub async fn observe(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let incoming = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
    let (trace_id, parent_span) = match incoming {
        Some((trace, parent)) => (trace, Some(parent)),
        None => (new_trace_id(), None),
    };
    let client_ip = client_ip(peer.ip(), req.headers(), &state.config.trusted_proxies);
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let path = path.unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    req.extensions_mut().insert(RequestContext { client_ip });

    let span = tracing::info_span!("request", trace_id = %trace_id, ip_address = %client_ip, user_id = tracing::field::Empty);
    continue_trace(&span, &trace_id, parent_span.as_deref());
    let response = match tokio::time::timeout(REQUEST_DEADLINE, next.run(req).instrument(span.clone())).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("the request took too long").into_response(),
    };

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.record_request(&method, &path, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            method = %method,
            path = %path,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request completed"
        )
    });
    response
}

/// Runs the request in a task of its own, so that it ends as it would have had its caller
/// waited: a client that disconnects, or a proxy that gives up at its timeout, would
/// otherwise cancel the handler wherever it is, for instance between committing a
/// revocation and publishing its cache marker, leaving the credential revoked in PostgreSQL
/// and still "active" in every proxy's cache (docs/caching.md). Each task is still bounded
/// by `REQUEST_DEADLINE` (in `observe`) and the database's own timeouts.
pub async fn run_to_completion(req: Request, next: Next) -> Response {
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            ApiError::internal(anyhow::anyhow!("request task failed: {e}")).into_response()
        }
    }
}

/// A request whose revocation committed but whose markers Redis did not take must not
/// answer 2xx, since every proxy would still serve the old entry. It answers `503` +
/// `Retry-After` instead; the change stays committed, the outbox keeps retrying, and a
/// retry answers 2xx once every pending marker is in Redis (docs/caching.md, "When the
/// markers cannot be written"). Handlers and their audit records are unchanged.
pub async fn acknowledge_only_published(request: Request, next: Next) -> Response {
    let (response, unpublished) = invalidation::tracking_unpublished(next.run(request)).await;
    if response.status().is_success() && unpublished {
        return ApiError::unavailable("the change is saved but not yet visible to every cache; retry").into_response();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn every_forwarded_for_line_reaches_the_shared_rule() {
        let trusted = forwarded::parse_nets("127.0.0.1, 10.0.0.0/8").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_ip(ip("203.0.113.9"), &xff("1.2.3.4"), &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("127.0.0.1"), &xff("6.6.6.6, 198.51.100.7, 10.1.1.1"), &trusted), ip("198.51.100.7"));
        let mut two = xff("6.6.6.6");
        two.append("x-forwarded-for", "198.51.100.8".parse().unwrap());
        assert_eq!(client_ip(ip("127.0.0.1"), &two, &trusted), ip("198.51.100.8"));
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &HeaderMap::new(), &trusted), ip("127.0.0.1"));
    }
}
