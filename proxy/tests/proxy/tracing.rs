//! One request, one trace: the proxy continues the caller's `traceparent`, passes its
//! own hop to the backend, and exports its span over OTLP when asked to.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::routing::{get, post};
use quantaid_test_stack::otlp_collector;
use reqwest::StatusCode;

use crate::stack::*;

type Seen = Arc<Mutex<Vec<String>>>;

/// A stand-in backend recording the `traceparent` it receives.
async fn recorder() -> (std::net::SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route("/health", get(|| async { "{}" })).route(
        "/v1/clients",
        post(move |headers: HeaderMap| {
            let s = s.clone();
            async move {
                let tp = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                s.lock().unwrap().push(tp);
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_continues_through_the_proxy() {
    let stack = Stack::start(0).await;
    let (addr, seen) = recorder().await;
    let (collector, exported) = otlp_collector().await;
    let mut proxy = stack.spawn_proxy(addr, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector), ("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming = format!("00-{trace}-00f067aa0ba902b7-01");
    let r = stack.http.post(format!("{}/v1/clients", proxy.url)).header("traceparent", &incoming).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = stack.http.post(format!("{}/v1/clients", proxy.url)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let hop: Vec<&str> = seen[0].split('-').collect();
    assert_eq!((hop[0], hop[1]), ("00", trace), "same trace: {}", seen[0]);
    assert_ne!(hop[2], "00f067aa0ba902b7", "the backend's parent is the proxy's own hop");
    let fresh: Vec<&str> = seen[1].split('-').collect();
    assert!(fresh.len() == 4 && fresh[1].len() == 32 && fresh[1] != trace, "a new trace starts: {}", seen[1]);

    // SIGTERM flushes the exporter; the proxy's span is in the caller's trace.
    proxy.child.signal(libc::SIGTERM);
    tokio::task::spawn_blocking(move || proxy.child.0.wait()).await.unwrap().unwrap();
    let trace_bytes: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).unwrap()).collect();
    let exported = exported.lock().unwrap().clone();
    assert!(exported.iter().any(|b| b.windows(16).any(|w| w == trace_bytes.as_slice())), "{} OTLP posts", exported.len());
}
