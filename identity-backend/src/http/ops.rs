//! The operations endpoints: liveness, readiness, and the Prometheus metrics (served on
//! the metrics port).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::SharedState;

/// Liveness: answers without touching any dependency.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: Postgres is reachable through the pool.
pub async fn ready(State(state): State<SharedState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.db.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    state.db.update_pool_gauges();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
