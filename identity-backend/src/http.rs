//! The API router, the operations endpoints and the two listeners.

pub mod extract;
pub mod middleware;

use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::oauth::{clients, introspect, token};
use crate::{audit, internal, mfa, sessions, users, SharedState};

pub fn api_router(state: SharedState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/v1/users", post(users::create).get(users::list))
        .route("/v1/users/{id}", get(users::get).patch(users::update).delete(users::delete))
        .route("/v1/users/{id}/password", post(users::change_password))
        .route("/v1/users/{id}/mfa/totp", post(mfa::enroll).delete(mfa::remove))
        .route("/v1/users/{id}/mfa/totp/confirm", post(mfa::confirm))
        .route("/v1/auth/login", post(sessions::login))
        .route("/v1/auth/mfa/verify", post(sessions::mfa_verify))
        .route("/v1/auth/session", get(sessions::current))
        .route("/v1/auth/logout", post(sessions::logout))
        .route("/v1/auth/logout-all", post(sessions::logout_all))
        .route("/v1/auth/reauthenticate", post(sessions::reauthenticate))
        .route("/v1/clients", post(clients::create))
        .route("/v1/clients/{id}", axum::routing::patch(clients::update).delete(clients::delete))
        .route("/v1/clients/{id}/secret", post(clients::rotate_secret))
        .route("/oauth/token", post(token::token))
        .route("/oauth/introspect", post(introspect::introspect))
        .route("/oauth/revoke", post(introspect::revoke))
        .route("/.well-known/oauth-authorization-server", get(introspect::metadata))
        .route("/v1/userinfo", get(introspect::userinfo))
        .route("/v1/audit-logs", get(audit::list))
        .route("/internal/v1/bloom-snapshot", get(internal::bloom_snapshot))
        .route("/internal/v1/introspect", post(internal::introspect))
        .fallback(|| async { ApiError::NotFound("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        // Inside `observe`, so that metrics and logs see the status the client gets.
        .layer(axum::middleware::from_fn(crate::invalidation::acknowledge_only_published))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::observe))
        .layer(axum::middleware::from_fn(middleware::run_to_completion))
        .with_state(state)
}

/// Liveness: answers without touching any dependency.
async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: Postgres is reachable through the pool.
async fn ready(State(state): State<SharedState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.db.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

pub fn metrics_router(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound("only /metrics is served here") })
        .with_state(state)
}

async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    state.db.update_pool_gauges();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// How many connections the kernel may hold for the backend before it accepts them
/// (the kernel caps it at `net.core.somaxconn`, 4096 by default). The usual 128 is
/// less than one burst from a proxy under load: connections beyond it have their SYN
/// dropped and wait a full second for the retransmission, past the proxy's connect
/// timeout, and the client gets a 503 from a healthy backend.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with room for a burst of connections.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // A restarted backend can bind while the old one's connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains: each open
/// connection finishes its in-flight request and closes.
///
/// Every connection must deliver a complete request head within `header_timeout` of
/// opening or of its previous response (hyper's header-read timer, which also runs
/// while a keep-alive connection waits for its next request, so it is the idle timeout
/// too). A client that sends nothing, or a header a byte at a time, is disconnected
/// instead of holding a socket and a task forever. Bodies are bounded by the request
/// deadline in `middleware.rs`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    header_timeout: Duration,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: back off rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
