//! Endpoints for the caching proxy in the same pod, behind `QUANTAID_INTERNAL_TOKEN`.
//! The proxy never forwards `/internal/*` from clients.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use quantaid_protocol::credential::presented_credential;
use quantaid_protocol::snapshot::SnapshotWriter;
use serde::Deserialize;
use tokio_postgres::IsolationLevel;

use crate::domain::security::token;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{FormBody, QueryParams};
use crate::http::oauth::introspect::introspection;
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

const SNAPSHOT_TIME: &str = "SELECT (extract(epoch FROM now()) * 1000)::bigint";
const LIVE_SESSIONS: &str = "SELECT token_digest FROM sessions WHERE created_at >= $1 AND revoked_at IS NULL AND expires_at > now()";
const LIVE_TOKENS: &str = "SELECT access_token FROM oauth_tokens WHERE created_at >= $1 AND NOT revoked AND expires_at > now()
     UNION ALL
     SELECT refresh_token FROM oauth_tokens
     WHERE created_at >= $1 AND NOT revoked AND refresh_token IS NOT NULL AND refresh_rotated_at IS NULL
       AND refresh_expires_at > now()";
const USERS: &str = "SELECT id FROM users WHERE created_at >= $1";

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
    let internal = |e: tokio_postgres::Error| ApiError::Internal(e.into());
    let mut conn = state.db.conn().await?;
    let tx = conn
        .client_mut()
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(internal)?;
    let started_ms: i64 = tx.query_one(SNAPSHOT_TIME, &[]).await.map_err(internal)?.get(0);
    // The watermark trails the snapshot: a credential stamped before it was committed
    // before the snapshot began, since its insert follows its creation within the pool
    // wait plus the statement timeout (seconds) and backend clocks agree far better than
    // the default minute.
    let margin = i64::try_from(state.config.bloom_watermark_margin.as_millis()).unwrap_or(i64::MAX);
    let mut out = SnapshotWriter::new(started_ms - margin);
    for row in tx.query(LIVE_SESSIONS, &[&since]).await.map_err(internal)? {
        out.session(row.get(0));
    }
    for row in tx.query(LIVE_TOKENS, &[&since]).await.map_err(internal)? {
        out.token(row.get(0));
    }
    for row in tx.query(USERS, &[&since]).await.map_err(internal)? {
        out.user(&row.get(0));
    }
    tx.commit().await.map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from(out.finish())).into_response())
}

/// `POST /internal/v1/introspect` (form `token=`): introspection without client
/// authentication, for the proxy's forward-auth check of access tokens.
pub async fn introspect(State(state): State<SharedState>, headers: HeaderMap, form: FormBody) -> ApiResult<Response> {
    require_internal(&state, &headers)?;
    let conn = state.db.conn().await?;
    let body = introspection(&conn, form.require("token")?, Utc::now()).await?;
    Ok(Json(body).into_response())
}
