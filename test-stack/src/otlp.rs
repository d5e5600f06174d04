//! A stand-in OTLP/HTTP collector, for the tests that check a sidecar exports its spans.

use std::sync::{Arc, Mutex};

use axum::routing::post;

/// Starts a collector on a free loopback port; returns its base URL (the value for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`) and the bodies posted to its `/v1/traces`, in order.
pub async fn otlp_collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body.to_vec());
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}
