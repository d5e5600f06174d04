//! Endpoints for the caching proxy in the same pod, behind `QUANTAID_INTERNAL_TOKEN`.
//! The proxy never forwards `/internal/*` from clients.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use quantaid_protocol::credential::presented_credential;
use serde::Deserialize;

use crate::domain::oauth::introspection;
use crate::domain::security::token;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{FormBody, QueryParams};
use crate::storage::snapshot::write_snapshot;
use crate::SharedState;

fn require_internal(state: &SharedState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = &state.internal_token_digest else {
        return Err(ApiError::NotFound("no such endpoint"));
    };
    match presented_credential(headers) {
        Some(t) if token::digests_match(expected, &token::digest(t)) => Ok(()),
        _ => Err(ApiError::Unauthorized("internal endpoint")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    /// Only what was created at or after this time (Unix ms): the incremental catch-up.
    since_ms: Option<i64>,
}

/// `GET /internal/v1/bloom-snapshot[?since_ms=]`: every live session and token digest
/// and every user id (or those created since `since_ms`), read in one repeatable-read
/// snapshot, as a binary stream: `watermark_ms: i64 BE`, then records
/// `kind: u8, len: u8, bytes`.
///
/// Revoked and expired credentials are left out: they can never become valid again, so
/// "absent" is the right answer for them. Rotated refresh tokens likewise.
pub async fn bloom_snapshot(
    State(state): State<SharedState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<SnapshotParams>,
) -> ApiResult<Response> {
    require_internal(&state, &headers)?;
    let since = params.since_ms.and_then(DateTime::<Utc>::from_timestamp_millis).unwrap_or(DateTime::UNIX_EPOCH);
    // The watermark trails the snapshot: a credential stamped before it was committed
    // before the snapshot began, since its insert follows its creation within the pool
    // wait plus the statement timeout (seconds) and backend clocks agree far better than
    // the default minute.
    let margin = i64::try_from(state.config.bloom_watermark_margin.as_millis()).unwrap_or(i64::MAX);
    let mut conn = state.db.conn().await?;
    let snapshot = write_snapshot(&mut conn, since, margin).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from(snapshot)).into_response())
}

/// `POST /internal/v1/introspect` (form `token=`): introspection without client
/// authentication, for the proxy's forward-auth check of access tokens.
pub async fn introspect(State(state): State<SharedState>, headers: HeaderMap, form: FormBody) -> ApiResult<Response> {
    require_internal(&state, &headers)?;
    let conn = state.db.conn().await?;
    let body = introspection(&conn, form.require("token")?, Utc::now()).await?;
    Ok(Json(body).into_response())
}
