//! The request middleware: trace context, client IP, request metrics and the access log.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::config::{canonical, IpNet};
use crate::error::ApiError;
use crate::http::extract::RequestContext;
use crate::telemetry::{continue_trace, new_trace_id, parse_traceparent};
use crate::SharedState;

/// Nothing a client asks of the backend may take longer than this; a stuck request
/// ends as a 503 rather than holding its connection forever.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// The client's address: the peer, or, when the peer is a trusted proxy, the hop that
/// handed the request to the outermost trusted proxy. `X-Forwarded-For` is read right
/// to left (only entries our own proxies appended can be believed) and the walk stops
/// at the first hop that is not trusted (that is the client) or cannot be parsed (its
/// sender is unknown, so the nearest trusted address found so far is used). Entries
/// left of the stop are whatever the client chose to send and are never looked at.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut nearest = canonical(peer);
    if !is_trusted(nearest) {
        return nearest;
    }
    // Several header lines form one list, in order; a line that is not text is one
    // unparsable hop.
    let hops: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(text) => text.split(',').map(parse_hop).collect(),
            Err(_) => vec![None],
        })
        .collect();
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop else { break };
        if !is_trusted(ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:443`), as some proxies write it.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let bare = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).unwrap_or(entry);
    let ip = bare.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(canonical(ip))
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
    req.extensions_mut().insert(RequestContext { trace_id: trace_id.clone(), client_ip });

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
            ApiError::Internal(anyhow::anyhow!("request task failed: {e}")).into_response()
        }
    }
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
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Untrusted peer: the header is ignored.
        assert_eq!(client_ip(ip("203.0.113.9"), &xff("1.2.3.4"), &trusted), ip("203.0.113.9"));
        // Trusted peer: the nearest untrusted hop wins, not a spoofed leftmost entry.
        assert_eq!(client_ip(ip("127.0.0.1"), &xff("6.6.6.6, 198.51.100.7, 10.1.1.1"), &trusted), ip("198.51.100.7"));
        // Garbage in the header: fall back to the nearest trusted hop.
        assert_eq!(client_ip(ip("127.0.0.1"), &xff("not-an-ip"), &trusted), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &xff("1.1.1.1, junk, 10.2.2.2"), &trusted), ip("10.2.2.2"));
        // Garbage left of the client is never looked at.
        assert_eq!(client_ip(ip("127.0.0.1"), &xff("junk, , unknown, 198.51.100.7"), &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("127.0.0.1"), &xff("198.51.100.7:4711"), &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("127.0.0.1"), &xff("[2001:db8::1]"), &trusted), ip("2001:db8::1"));
        // Several header lines are one list.
        let mut two = xff("6.6.6.6");
        two.append("x-forwarded-for", "198.51.100.8".parse().unwrap());
        assert_eq!(client_ip(ip("127.0.0.1"), &two, &trusted), ip("198.51.100.8"));
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &HeaderMap::new(), &trusted), ip("127.0.0.1"));
    }
}
