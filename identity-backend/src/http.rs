//! The API router, the operations endpoints and the two listeners.

pub mod extract;
pub mod middleware;

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

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
        .route("/v1/users/{id}/mfa/totp", post(mfa::enroll))
        .route("/v1/users/{id}/mfa/totp/confirm", post(mfa::confirm))
        .route("/v1/auth/login", post(sessions::login))
        .route("/v1/auth/mfa/verify", post(sessions::mfa_verify))
        .route("/v1/auth/session", get(sessions::current))
        .route("/v1/auth/logout", post(sessions::logout))
        .route("/v1/auth/logout-all", post(sessions::logout_all))
        .route("/v1/clients", post(clients::create))
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

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
