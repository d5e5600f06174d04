//! The proxy's front door: every client connection passes here before Pingora parses
//! anything (docs/security.md, "Request head limits").
//!
//! Pingora 0.9 reads up to 1 MiB of request head per connection, waits up to 60 s for
//! *each* read (so a client dripping one header line at a time is never cut off), takes
//! any number of connections, and answers the framing errors it finds with an empty
//! body. None of that is configurable there, so this layer reads each request head
//! itself, within:
//!
//! - a size limit (`QUANTAID_PROXY_MAX_HEADER_BYTES`) and a header-count limit
//!   (`QUANTAID_PROXY_MAX_HEADERS`): `431` beyond;
//! - a total deadline for the whole head (`QUANTAID_PROXY_HEADER_TIMEOUT_MS`), counted
//!   from the connection's start for its first request and from the first byte for the
//!   next ones on a kept-alive connection: `408` past it;
//! - a cap on concurrent connections per replica (`QUANTAID_PROXY_MAX_CONNECTIONS`):
//!   a connection beyond it gets `503` at once.
//!
//! It also answers the framing errors a request head can carry — folded header lines,
//! conflicting or malformed `Content-Length`, a final transfer coding other than
//! `chunked`, `CONNECT` — with the `{"error","error_description"}` body, then closes.
//! A head that passes is served on the spot when it is for one of the proxy's own routes
//! (`direct.rs`); any other is handed to Pingora unchanged, as if Pingora had read it.

use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::prelude::timeout;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use quantaid_protocol::wire::ErrorBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::Config;
use crate::direct::Served;
use crate::service::QuantaProxy;

/// How long a kept-alive connection may sit idle between requests (Pingora's default).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// After an error answer, how long the rest of the client's request is read and
/// dropped before closing, so the close does not reset the connection before the
/// client has read the answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 1 << 20;
/// The most header lines `QUANTAID_PROXY_MAX_HEADERS` may allow (Pingora's own limit).
pub const MAX_HEADERS_CEILING: usize = 256;

/// The limits, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_timeout: Duration,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Limits { max_header_bytes: config.max_header_bytes, max_headers: config.max_headers, header_timeout: config.header_timeout }
    }
}

/// Why a request head is refused: the status and the error body's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub description: &'static str,
}

const fn refusal(status: u16, error: &'static str, description: &'static str) -> Refusal {
    Refusal { status, error, description }
}

pub const HEAD_TOO_LARGE: Refusal = refusal(431, "invalid_request", "the request header is too large");
pub const TOO_MANY_HEADERS: Refusal = refusal(431, "invalid_request", "the request has too many header fields");
pub const HEAD_TIMEOUT: Refusal = refusal(408, "invalid_request", "the request header was not received in time");
pub const OBS_FOLD: Refusal = refusal(400, "invalid_request", "folded (obs-fold) header lines are not accepted");
pub const BAD_CONTENT_LENGTH: Refusal =
    refusal(400, "invalid_request", "Content-Length is malformed, negative or given twice with different values");
pub const BAD_TRANSFER_ENCODING: Refusal = refusal(400, "invalid_request", "Transfer-Encoding must end in chunked, and only on HTTP/1.1");
pub const MALFORMED: Refusal = refusal(400, "invalid_request", "the request header is malformed");
pub const CONNECT: Refusal = refusal(405, "invalid_request", "CONNECT is not supported");
pub const BUSY: Refusal = refusal(503, "temporarily_unavailable", "too many connections; retry shortly");

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    }
}

/// The raw HTTP/1.1 answer for a refusal; the connection closes after it.
pub fn refusal_response(r: Refusal) -> Vec<u8> {
    let body = ErrorBody { error: r.error, error_description: r.description }.to_json();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n",
        r.status,
        reason(r.status),
        body.len()
    );
    if r.status == 503 {
        head.push_str("retry-after: 1\r\n");
    }
    if r.status == 405 {
        head.push_str("allow: GET, POST, PATCH, DELETE\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Where the head that starts at the beginning of `buf` ends (just past its blank
/// line), if it has; empty lines before the request line are skipped, as parsers do.
/// Bare LF line ends count, as Pingora's parser accepts them.
fn head_end(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let mut i = start;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let next = i + pos + 1;
        if buf.get(next) == Some(&b'\n') {
            return Some(next + 1);
        }
        if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
            return Some(next + 2);
        }
        i = next;
    }
    None
}

/// What the bytes read so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Inspection {
    /// A whole head that passed the checks.
    Complete,
    /// Not a whole head yet.
    Partial,
    Refused(Refusal),
}

/// Line-level checks httparse does not explain well: counts and folded lines. Only
/// whole lines are judged (the last one may still be arriving).
fn check_lines(head: &[u8], limits: &Limits) -> Result<(), Refusal> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(head.len());
    let complete = head.iter().rposition(|&b| b == b'\n').map_or(start, |last| (last + 1).max(start));
    let lines = head[start..complete].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut fields = 0;
    for line in lines.skip(1).take_while(|l| !l.is_empty()) {
        fields += 1;
        if fields > limits.max_headers {
            return Err(TOO_MANY_HEADERS);
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err(OBS_FOLD);
        }
    }
    Ok(())
}

/// Framing checks on a parsed head.
fn check_framing(req: &httparse::Request<'_, '_>) -> Result<(), Refusal> {
    if req.method == Some("CONNECT") {
        return Err(CONNECT);
    }
    let values = |name: &'static str| req.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    // RFC 9110 §8.6: a list of identical values may be read as one; anything else is
    // ambiguous framing.
    let mut length: Option<&[u8]> = None;
    for value in values("content-length") {
        for part in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let valid = !part.is_empty() && part.len() <= 18 && part.iter().all(u8::is_ascii_digit);
            if !valid || length.is_some_and(|seen| seen != part) {
                return Err(BAD_CONTENT_LENGTH);
            }
            length = Some(part);
        }
    }
    let codings: Vec<&[u8]> = values("transfer-encoding").flat_map(|v| v.split(|&b| b == b',')).map(<[u8]>::trim_ascii).collect();
    if let Some(last) = codings.last() {
        if req.version != Some(1) || !last.eq_ignore_ascii_case(b"chunked") {
            return Err(BAD_TRANSFER_ENCODING);
        }
    }
    Ok(())
}

/// Judges the bytes read so far on a connection, at the start of a request.
pub fn inspect(buf: &[u8], limits: &Limits) -> Inspection {
    let end = head_end(buf);
    let region = &buf[..end.unwrap_or(buf.len())];
    if end.is_some_and(|end| end > limits.max_header_bytes) || (end.is_none() && buf.len() > limits.max_header_bytes) {
        return Inspection::Refused(HEAD_TOO_LARGE);
    }
    if let Err(refusal) = check_lines(region, limits) {
        return Inspection::Refused(refusal);
    }
    // Left uninitialised: zeroing the whole array cost more than parsing a short head.
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS_CEILING];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(region, &mut headers[..limits.max_headers.min(MAX_HEADERS_CEILING)]) {
        Ok(httparse::Status::Complete(_)) => match check_framing(&req) {
            Ok(()) => Inspection::Complete,
            Err(refusal) => Inspection::Refused(refusal),
        },
        Ok(httparse::Status::Partial) => Inspection::Partial,
        // An illegal byte in the request target: Pingora escapes it and parses the
        // head itself, once the whole head is here.
        Err(httparse::Error::Token | httparse::Error::Version) if end.is_some() => Inspection::Complete,
        Err(httparse::Error::Token | httparse::Error::Version) => Inspection::Partial,
        Err(httparse::Error::TooManyHeaders) => Inspection::Refused(TOO_MANY_HEADERS),
        Err(_) => Inspection::Refused(MALFORMED),
    }
}

/// What reading a head produced.
enum Head {
    /// A head that passed the checks, with whatever was read after it.
    Ready(BytesMut),
    /// The client went away, stayed idle, or the server is shutting down: close quietly.
    Closed,
    Refused(Refusal),
}

pub struct Gate {
    proxy: Arc<HttpProxy<QuantaProxy>>,
    /// The same service, for the requests served without Pingora.
    direct: QuantaProxy,
    limits: Limits,
    connections: Arc<Semaphore>,
}

impl Gate {
    /// `proxy` is Pingora's service around `direct`.
    pub fn new(proxy: HttpProxy<QuantaProxy>, direct: QuantaProxy, config: &Config) -> Self {
        Gate {
            proxy: Arc::new(proxy),
            direct,
            limits: Limits::from_config(config),
            connections: Arc::new(Semaphore::new(config.max_connections)),
        }
    }

    /// Reads one request head, after the bytes of it already in `buf`. `reused`: a
    /// kept-alive connection, which may first sit idle; a new one's deadline runs from
    /// its start.
    async fn read_head(&self, stream: &mut Stream, mut buf: BytesMut, reused: bool, shutdown: &ShutdownWatch) -> Head {
        buf.reserve(4096);
        if reused && buf.is_empty() {
            let mut watch = shutdown.clone();
            let first = tokio::select! {
                read = timeout(KEEPALIVE_IDLE, stream.read_buf(&mut buf)) => read,
                _ = watch.changed() => return Head::Closed,
            };
            if !matches!(first, Ok(Ok(n)) if n > 0) {
                return Head::Closed;
            }
        }
        let deadline = Instant::now() + self.limits.header_timeout;
        loop {
            match inspect(&buf, &self.limits) {
                Inspection::Complete => return Head::Ready(buf),
                Inspection::Refused(refusal) => return Head::Refused(refusal),
                Inspection::Partial => {}
            }
            // Never hold more than the limit (plus one byte, to see it was passed).
            let room = (self.limits.max_header_bytes + 1 - buf.len()) as u64;
            buf.reserve(4096);
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, (&mut *stream).take(room).read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Head::Closed,
                Err(_) if buf.is_empty() && reused => return Head::Closed,
                Err(_) => return Head::Refused(HEAD_TIMEOUT),
            }
        }
    }
}

/// Writes a refusal, then closes without resetting the connection (`linger_and_close`).
async fn refuse(stream: &mut Stream, refusal: Refusal) {
    tracing::debug!(status = refusal.status, reason = refusal.description, "request head refused");
    let written = timeout(Duration::from_secs(1), async {
        stream.write_all(&refusal_response(refusal)).await?;
        stream.flush().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        linger_and_close(stream).await;
    }
}

/// Ends a connection whose request was not read whole, after its answer was written:
/// shuts the write side, then reads and drops what the client still sends for a moment
/// (bounded in time and bytes), so that closing with unread bytes does not reset the
/// connection before the client has read the answer.
pub(crate) async fn linger_and_close(stream: &mut Stream) {
    if !matches!(timeout(Duration::from_secs(1), stream.shutdown()).await, Ok(Ok(()))) {
        return;
    }
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    let until = Instant::now() + LINGER;
    while drained < LINGER_BYTES {
        match timeout(until.saturating_duration_since(Instant::now()), stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

#[async_trait]
impl ServerApp for Gate {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // Held for the connection's whole life.
        let Ok(_permit) = self.connections.clone().try_acquire_owned() else {
            refuse(&mut stream, BUSY).await;
            return None;
        };
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut reused = false;
        // Bytes read past the last request served directly: the start of the next one.
        let mut pending = BytesMut::new();
        loop {
            let buf = std::mem::take(&mut pending);
            let mut head = match self.read_head(&mut stream, buf, reused, shutdown).await {
                Head::Ready(head) => head,
                Head::Closed => return None,
                Head::Refused(refusal) => {
                    refuse(&mut stream, refusal).await;
                    return None;
                }
            };
            reused = true;
            let shutting_down = *shutdown.borrow();
            match self.direct.serve_direct(&mut stream, &mut head, shutting_down).await {
                Served::KeptAlive => {
                    pending = head;
                    continue;
                }
                Served::Closed => return None,
                Served::HandedOver => {}
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(Some(KEEPALIVE_IDLE.as_secs())),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            // Pingora parses the head from these bytes as if it had read them itself.
            session.set_pipelined_prefix(head);
            let (next, next_settings) = self.proxy.process_new_http(session, shutdown).await?.consume();
            stream = next;
            settings = next_settings;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_header_bytes: 16384, max_headers: 20, header_timeout: Duration::from_secs(1) };

    fn check(head: &str) -> Result<(), Refusal> {
        match inspect(head.as_bytes(), &LIMITS) {
            Inspection::Complete => Ok(()),
            Inspection::Refused(r) => Err(r),
            Inspection::Partial => panic!("partial: {head:?}"),
        }
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        // Empty lines before the request line do not end a head.
        assert_eq!(head_end(b"\r\n\r\nGET / HTTP/1.1\r\n"), None);
        for partial in ["", "\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\n", "GET /a|b HTTP/1.1\r\nX: 1\r\n", "GET / HTTP/1.1\r\nX-A: 1\r\nX-B"]
        {
            assert_eq!(inspect(partial.as_bytes(), &LIMITS), Inspection::Partial, "{partial:?}");
        }
        // A folded line or too many lines are refused before the head is complete.
        assert_eq!(inspect(b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n", &LIMITS), Inspection::Refused(OBS_FOLD));
        let over = "a".repeat(16385);
        assert_eq!(inspect(format!("GET / HTTP/1.1\r\nX: {over}").as_bytes(), &LIMITS), Inspection::Refused(HEAD_TOO_LARGE));
    }

    #[test]
    fn framing_errors_are_refused() {
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(()));
        assert_eq!(check("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), Ok(()));
        assert_eq!(check("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), Err(BAD_CONTENT_LENGTH));
        assert_eq!(check("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), Err(BAD_CONTENT_LENGTH));
        assert_eq!(check("POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n"), Err(BAD_CONTENT_LENGTH));
        assert_eq!(check("GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n"), Err(OBS_FOLD));
        assert_eq!(check("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), Err(CONNECT));
        assert_eq!(check("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), Err(BAD_TRANSFER_ENCODING));
        assert_eq!(check("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(BAD_TRANSFER_ENCODING));
        assert_eq!(check("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), Err(MALFORMED));
        let many: String = (0..21).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(check(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Err(TOO_MANY_HEADERS));
        let big = "a".repeat(16384);
        assert_eq!(check(&format!("GET / HTTP/1.1\r\nX: {big}\r\n\r\n")), Err(HEAD_TOO_LARGE));
        // Pingora escapes illegal bytes in the target itself.
        assert_eq!(check("GET /a|b HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(()));
    }

    #[test]
    fn refusals_carry_the_error_body() {
        let raw = String::from_utf8(refusal_response(HEAD_TOO_LARGE)).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 ") && head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
}
