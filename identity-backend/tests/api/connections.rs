//! Connection-level limits, over raw TCP sockets (an HTTP client cannot send half a
//! request or hold a header open).

use std::time::{Duration, Instant};

use quantaid_backend::config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use quantaid_test_stack::*;

/// Reads until the server closes the connection; how long that took, or `None` if it
/// was still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.url.trim_start_matches("http://")).await.unwrap()
}

/// A connection that sends nothing, one that sends a header a line at a time, and an
/// idle keep-alive connection are all closed once the header-read timeout passes; a
/// normal request on a fresh connection is still answered.
#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed() {
    let app = TestApp::with(&[(config::HEADER_READ_TIMEOUT_MS, "1000")]).await;
    let limit = Duration::from_secs(8);

    let mut silent = connect(&app).await;

    let mut idle = connect(&app).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));

    // A slow drip: never idle for long, but the head never completes.
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let drip = async {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(format!("X-Drip-{i}: x\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let (silent_closed, idle_closed, ()) = tokio::join!(closed_within(&mut silent, limit), closed_within(&mut idle, limit), drip);
    let slow_closed = closed_within(&mut slow, Duration::from_millis(100)).await;
    assert!(silent_closed.is_some(), "a connection that sent nothing was kept open for {limit:?}");
    assert!(idle_closed.is_some(), "an idle keep-alive connection was kept open for {limit:?}");
    assert!(slow_closed.is_some(), "a header sent a line every 200 ms was kept open for 8 s");

    // The server itself is fine.
    let r = app.get("/health", None).await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

/// A burst of connections the backend has not accepted yet all complete their handshake
/// at once: none waits for a SYN retransmission (a second), which would outlast the
/// proxy's connect timeout and turn a burst into 503s.
#[tokio::test]
async fn a_burst_of_connections_fits_the_listen_queue() {
    let listener = quantaid_backend::http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    // Nobody accepts: the kernel's queue alone must hold them.
    let burst = (0..600).map(|_| tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)));
    let connected = futures::future::join_all(burst).await;
    let waiting = connected.iter().filter(|c| !matches!(c, Ok(Ok(_)))).count();
    assert_eq!(waiting, 0, "{waiting} of 600 connections were not established within 500 ms");
    drop(listener);
}
