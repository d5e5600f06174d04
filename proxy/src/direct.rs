//! Serves the proxy's own routes (the cached lookups, health, readiness) on the client
//! connection itself, once the gate has read a request head.
//!
//! Pingora's proxy machinery (a session, its header maps, the filter chain) costs more
//! per request than answering a cached lookup does: measured in docs/benchmarks.md ("The
//! direct path"). The answers come from the same endpoints (`endpoints.rs`) either way;
//! only reading the request and writing the reply differ. Requests framed in any but the
//! plain way (not HTTP/1.1, a `Transfer-Encoding`, `Expect`, `Upgrade`, a body on a route
//! that reads none) are handed over to Pingora unread, and everything else (the
//! pass-through routes) always is.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora::prelude::timeout;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::endpoints::Call;
use crate::respond::Reply;
use crate::routes::{classify, Route};
use crate::service::QuantaProxy;
use crate::telemetry::{log_request, Trace};

/// Header lines a request served here may have; one with more goes to Pingora.
const MAX_DIRECT_HEADERS: usize = 32;
/// How long writing a reply may take: a client that stops reading is let go.
const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of the request at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Served {
    /// Answered; the connection waits for its next request (any bytes of it already
    /// read stay in the buffer).
    KeptAlive,
    /// Answered, or the client went away: the connection is done.
    Closed,
    /// Not served here: the buffer is untouched, for Pingora to read.
    HandedOver,
}

/// A request head this path serves, copied out of the buffer.
#[derive(Debug)]
struct Head {
    method: Method,
    route: Route,
    template: &'static str,
    headers: HeaderMap,
    /// Bytes of the head, and of the body after it.
    head_len: usize,
    body_len: usize,
    /// The client asked to close after this request (`Connection: close`).
    close: bool,
}

/// Parses the head at the start of `buf`; `None` when Pingora should serve it. The gate
/// has already checked that the head is whole and within its limits.
fn parse(buf: &[u8]) -> Option<Head> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_DIRECT_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let httparse::Status::Complete(head_len) = request.parse(buf).ok()? else { return None };
    if request.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(request.method?.as_bytes()).ok()?;
    let target = request.path?;
    if !target.starts_with('/') {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let (route, template) = classify(&method, path);
    if route == Route::PassThrough {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(field.value).ok()?);
    }
    let plain = [http::header::TRANSFER_ENCODING, http::header::EXPECT, http::header::UPGRADE];
    if plain.iter().any(|name| headers.contains_key(name)) {
        return None;
    }
    // The gate refused any Content-Length that is malformed or given twice differently.
    let body_len = match headers.get(http::header::CONTENT_LENGTH) {
        Some(value) => value.to_str().ok()?.split(',').next()?.trim().parse().ok()?,
        None => 0,
    };
    if body_len > 0 && !route.reads_body() {
        return None;
    }
    let close = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close")));
    Some(Head { method, route, template, headers, head_len, body_len, close })
}

/// The reply as HTTP/1.1 bytes.
fn encode(reply: &Reply, keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + reply.body.len());
    let reason = reply.status.canonical_reason().unwrap_or("");
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", reply.status.as_u16()).as_bytes());
    let date = ("date", get_cached_date());
    let connection = ("connection", HeaderValue::from_static(if keep_alive { "keep-alive" } else { "close" }));
    for (name, value) in reply.head_fields().chain([date, connection]) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&reply.body);
    out
}

impl QuantaProxy {
    /// Serves the request at the start of `buf` if it is one of the proxy's own, plainly
    /// framed: reads its body (within `QUANTAID_PROXY_BODY_TIMEOUT_MS` and
    /// `QUANTAID_PROXY_MAX_BODY_BYTES`), answers, and leaves what follows it in `buf`.
    pub(crate) async fn serve_direct(&self, stream: &mut Stream, buf: &mut BytesMut, shutting_down: bool) -> Served {
        let Some(head) = parse(buf) else { return Served::HandedOver };
        let started = std::time::Instant::now();
        let trace = Trace::start(&head.headers);
        let body = self.read_whole_body(stream, buf, &head).await;
        let reply = match body {
            Ok(Some(body)) => {
                let call = Call { headers: &head.headers, body, traceparent: &trace.traceparent };
                match self.answer(head.route, call).await {
                    Some(reply) => reply,
                    // `parse` let only the proxy's own routes through.
                    None => Reply::unavailable().closing(),
                }
            }
            Ok(None) => return Served::Closed,
            Err(refused) => refused,
        };
        let keep_alive = !(reply.close || head.close || shutting_down);
        let written = timeout(REPLY_WRITE_TIMEOUT, async {
            stream.write_all(&encode(&reply, keep_alive)).await?;
            stream.flush().await
        })
        .await;
        let error = match written {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("the client did not read the reply in time".to_string()),
        };
        // Recorded before any lingering below, which is not the request's latency.
        let ip = peer_ip(stream);
        log_request(&head.method, head.template, reply.status.as_u16(), started, ip, error.clone(), &trace.span);
        if reply.close && error.is_none() {
            // The rest of the request is unread (too large, or too slow).
            crate::gate::linger_and_close(stream).await;
        }
        if keep_alive && error.is_none() {
            Served::KeptAlive
        } else {
            Served::Closed
        }
    }

    /// The request's body, read whole and taken out of `buf` with its head. `Ok(None)`:
    /// the client went away. `Err`: the reply that refuses the body (the connection then
    /// closes, its rest unread).
    async fn read_whole_body(&self, stream: &mut Stream, buf: &mut BytesMut, head: &Head) -> Result<Option<Bytes>, Reply> {
        if head.body_len > self.config.max_body_bytes {
            return Err(Reply::body_too_large());
        }
        let total = head.head_len + head.body_len;
        let deadline = Instant::now() + self.config.body_timeout;
        while buf.len() < total {
            buf.reserve(total - buf.len());
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, stream.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Ok(None),
                Err(_) => return Err(Reply::body_too_slow()),
            }
        }
        Ok(Some(buf.split_to(total).freeze().slice(head.head_len..)))
    }
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    digest.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_plainly_framed_requests_for_its_own_routes() {
        let head = parse(b"POST /oauth/introspect HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\ntoken=xGET").unwrap();
        assert_eq!(
            (head.route, head.template, head.head_len, head.body_len, head.close),
            (Route::Introspect, "/oauth/introspect", 63, 7, false)
        );
        let head = parse(b"GET /v1/auth/check?x=1 HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").unwrap();
        assert_eq!((head.route, head.close), (Route::Check, true));
        for handed_over in [
            &b"GET /v1/auth/check HTTP/1.0\r\n\r\n"[..],
            b"GET http://a/v1/auth/check HTTP/1.1\r\n\r\n",
            b"POST /v1/auth/login HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            b"POST /oauth/introspect HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /oauth/introspect HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n",
            b"GET /v1/auth/check HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            b"GET /v1/auth/check HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert!(parse(handed_over).is_none(), "{}", String::from_utf8_lossy(handed_over));
        }
        let many: String = (0..MAX_DIRECT_HEADERS + 1).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(parse(format!("GET /v1/auth/check HTTP/1.1\r\n{many}\r\n").as_bytes()).is_none());
    }

    #[test]
    fn encodes_a_reply_as_http_1_1() {
        let reply = Reply::ok(Bytes::from_static(b"{}"));
        let raw = String::from_utf8(encode(&reply, true)).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\ncache-control: no-store\r\n"));
        assert!(head.contains("\r\ndate: ") && head.ends_with("connection: keep-alive"));
        assert_eq!(body, "{}");
        assert!(String::from_utf8(encode(&Reply::body_too_slow(), false)).unwrap().contains("connection: close\r\n\r\n{"));
    }
}
