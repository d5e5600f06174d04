//! Each request's trace context and its record (the request histogram and the access
//! log line), the same whichever way the request was served (`direct.rs` or Pingora).

use std::net::IpAddr;
use std::time::Instant;

use http::{HeaderValue, Method};
use quantaid_runtime::telemetry::{continue_trace, new_trace_id, outgoing_span_id, parse_traceparent};

use crate::metrics::METRICS;

/// A request's trace context: continued from the client's `traceparent` or begun here.
pub(crate) struct Trace {
    /// The `traceparent` this hop sends to the backend.
    pub traceparent: HeaderValue,
    /// This hop's span: exported over OTLP when that is on; ends with the request.
    pub span: tracing::Span,
}

impl Trace {
    pub fn none() -> Trace {
        Trace { traceparent: HeaderValue::from_static(""), span: tracing::Span::none() }
    }

    pub fn start(headers: &http::HeaderMap) -> Trace {
        let incoming = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        let (trace_id, parent_span) = match incoming {
            Some((trace, parent)) => (trace, Some(parent)),
            None => (new_trace_id(), None),
        };
        let span = tracing::info_span!("proxy_request", trace_id = %trace_id);
        continue_trace(&span, &trace_id, parent_span.as_deref());
        let traceparent = format!("00-{}-{}-01", trace_id, outgoing_span_id(&span));
        let traceparent = HeaderValue::from_str(&traceparent).unwrap_or(HeaderValue::from_static(""));
        Trace { traceparent, span }
    }
}

/// A request's metrics and access log line, however it was served.
pub(crate) fn log_request(
    method: &Method,
    template: &'static str,
    status: u16,
    started: Instant,
    ip: Option<IpAddr>,
    error: Option<String>,
    span: &tracing::Span,
) {
    let elapsed = started.elapsed();
    METRICS.record_request(method, template, status, elapsed);
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
    let _entered = span.enter();
    tracing::info!(
        ip_address = %ip,
        method = %method,
        path = template,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        error,
        "request completed"
    );
}
