//! The proxy's own routes served on the connection without Pingora (`proxy/src/direct.rs`):
//! keep-alive and pipelining behave as HTTP/1.1 says, and a request framed any other
//! way is still answered, by the same endpoint through Pingora.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stack::*;

/// One response read off a connection.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Value,
}

/// Reads responses until the connection closes (bounded: 15 s), splitting them by
/// `Content-Length`.
async fn read_responses(stream: &mut TcpStream) -> Vec<Response> {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut raw)).await;
    let mut rest = &raw[..];
    let mut responses = Vec::new();
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_lowercase();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        let body = &rest[end + 4..(end + 4 + length).min(rest.len())];
        responses.push(Response { status, head, body: serde_json::from_slice(body).unwrap_or(Value::Null) });
        rest = &rest[(end + 4 + length).min(rest.len())..];
    }
    responses
}

fn introspection(basic: &str, token: &str, extra: &str) -> String {
    let body = format!("token={token}");
    format!(
        "POST /oauth/introspect HTTP/1.1\r\nHost: a\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Requests sent back to back in one write are answered in order on the one
/// connection, and `Connection: close` ends it after its answer.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let stack = Stack::start(1).await;
    let client = stack.create_client(&["client_credentials"], &["read"]).await;
    let token = stack.issue(0, &client).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", client.0, client.1));
    let check =
        |bearer: &str, extra: &str| format!("GET /v1/auth/check HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {bearer}\r\n{extra}\r\n");
    let requests = [
        check(&token, ""),
        introspection(&basic, &token, ""),
        check("not-a-token", ""),
        "GET /health HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        introspection(&basic, &token, "Connection: close\r\n"),
        // After the close: never answered.
        check(&token, ""),
    ];
    let mut stream = TcpStream::connect(stack.proxies[0].url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(requests.concat().as_bytes()).await.unwrap();
    let responses = read_responses(&mut stream).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 401, 200, 200], "{responses:#?}");
    assert!(responses[0].head.contains(&format!("x-quantaid-client-id: {}", client.0)), "{:?}", responses[0]);
    assert_eq!(responses[1].body["active"], true);
    assert_eq!(responses[2].body["error"], "unauthorized");
    assert!(responses[2].head.contains("www-authenticate: bearer"), "{:?}", responses[2]);
    assert_eq!(responses[3].body["status"], "ok");
    assert!(responses[..4].iter().all(|r| r.head.contains("connection: keep-alive")), "{responses:#?}");
    assert!(responses[4].head.contains("connection: close") && responses[4].body["active"] == true, "{:?}", responses[4]);
}

/// A chunked body or `Expect: 100-continue` is not served directly: Pingora reads it,
/// and the same endpoint answers.
#[tokio::test]
async fn unusually_framed_requests_get_the_same_answers() {
    let stack = Stack::start(1).await;
    let client = stack.create_client(&["client_credentials"], &["read"]).await;
    let token = stack.issue(0, &client).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", client.0, client.1));
    let body = format!("token={token}");
    let chunked = format!(
        "POST /oauth/introspect HTTP/1.1\r\nHost: a\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let http10 = format!("GET /v1/auth/check HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n");
    let expecting = introspection(&basic, &token, "Expect: 100-continue\r\nConnection: close\r\n");
    for (what, request) in [("chunked", chunked), ("HTTP/1.0", http10), ("expect", expecting)] {
        let mut stream = TcpStream::connect(stack.proxies[0].url.trim_start_matches("http://")).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let responses = read_responses(&mut stream).await;
        let last = responses.iter().rfind(|r| r.status != 100);
        assert!(last.is_some_and(|r| r.status == 200), "{what}: {responses:#?}");
        if what != "HTTP/1.0" {
            assert_eq!(last.unwrap().body["active"], true, "{what}");
        }
    }
}

/// A body refused unread (too large) gets its `413` and JSON error while the client is
/// still sending it: the proxy closes its side and drains for a moment rather than
/// resetting the connection under the client.
#[tokio::test]
async fn a_body_refused_unread_is_answered_before_the_close() {
    let stack = Stack::start(1).await;
    let addr = stack.proxies[0].url.trim_start_matches("http://").to_string();
    for attempt in 0..10 {
        let stream = TcpStream::connect(&addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let sending = tokio::spawn(async move {
            let head = "POST /oauth/introspect HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\n";
            let mut sent = writer.write_all(head.as_bytes()).await.is_ok();
            let chunk = vec![b'a'; 16 * 1024];
            for _ in 0..60 {
                sent = sent && writer.write_all(&chunk).await.is_ok();
            }
            sent
        });
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(matches!(read, Ok(Ok(_))), "attempt {attempt}: the connection was reset: {read:?}, read {text:?}");
        assert!(text.starts_with("HTTP/1.1 413 ") && text.contains("\"error\":\"invalid_request\""), "attempt {attempt}: {text:?}");
        let _ = sending.await;
    }
}

/// The sum and count of the proxy's latency histogram for `POST /oauth/introspect`.
async fn introspect_latency(stack: &Stack) -> (f64, u64) {
    let text = stack.http.get(&stack.proxies[0].metrics_url).send().await.unwrap().text().await.unwrap();
    let series = r#"{method="POST",path="/oauth/introspect"} "#;
    let value = |name: &str| {
        let prefix = format!("quantaid_http_request_duration_seconds_{name}{series}");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    (value("sum"), value("count") as u64)
}

#[tokio::test]
async fn a_refused_body_is_timed_to_its_answer_not_to_the_close() {
    let stack = Stack::start(1).await;
    let addr = stack.proxies[0].url.trim_start_matches("http://").to_string();
    let (sum_before, count_before) = introspect_latency(&stack).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    // A body announced and never sent: the proxy refuses it at once, then waits out its
    // drain (the client neither sends nor closes) before it closes.
    let head = "POST /oauth/introspect HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let responses = read_responses(&mut stream).await;
    assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [413]);
    let (sum_after, count_after) = introspect_latency(&stack).await;
    assert_eq!(count_after, count_before + 1);
    // The drain lasts its full 500 ms here, so a record that included it would be at
    // least that long: a bound on what was measured, not on how fast.
    let recorded = sum_after - sum_before;
    assert!(recorded < 0.5, "the refusal was recorded as taking {recorded} s, its drain included");
}
