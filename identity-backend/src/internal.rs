//! Endpoints for the caching proxy in the same pod, behind `QUANTAID_INTERNAL_TOKEN`.
//! The proxy never forwards `/internal/*` from clients.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use tokio_postgres::IsolationLevel;

use crate::db::Query;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{presented_credential, FormBody};
use crate::oauth::introspect::introspection;
use crate::security::token;
use crate::SharedState;

/// How far behind the snapshot the Bloom watermark is set. A credential stamped before
/// the watermark was committed before the snapshot began: its insert follows its
/// creation within the pool wait plus the statement timeout (seconds), and backend
/// clocks agree to well within a minute.
pub const WATERMARK_MARGIN_MS: i64 = 60_000;

/// Record kinds in the snapshot stream.
pub const RECORD_SESSION: u8 = 1;
pub const RECORD_TOKEN: u8 = 2;
pub const RECORD_USER: u8 = 3;

fn require_internal(state: &SharedState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = &state.internal_token_digest else {
        return Err(ApiError::NotFound("no such endpoint"));
    };
    match presented_credential(headers) {
        Some(t) if token::digests_match(expected, &token::digest(t)) => Ok(()),
        _ => Err(ApiError::Unauthorized("internal endpoint")),
    }
}

const SNAPSHOT_TIME: Query = Query {
    name: "bloom_snapshot_time",
    sql: "SELECT (extract(epoch FROM now()) * 1000)::bigint",
};
const LIVE_SESSIONS: Query = Query {
    name: "bloom_live_sessions",
    sql: "SELECT token_digest FROM sessions WHERE revoked_at IS NULL AND expires_at > now()",
};
const LIVE_TOKENS: Query = Query {
    name: "bloom_live_tokens",
    sql: "SELECT access_token FROM oauth_tokens WHERE NOT revoked AND expires_at > now()
          UNION ALL
          SELECT refresh_token FROM oauth_tokens
          WHERE NOT revoked AND refresh_token IS NOT NULL AND refresh_rotated_at IS NULL AND refresh_expires_at > now()",
};
const ALL_USERS: Query = Query { name: "bloom_all_users", sql: "SELECT id FROM users" };

/// `GET /internal/v1/bloom-snapshot`: every live session and token digest and every
/// user id, read in one repeatable-read snapshot, as a binary stream:
/// `watermark_ms: i64 BE`, then records `kind: u8, len: u8, bytes`.
///
/// Revoked and expired credentials are left out: they can never become valid again, so
/// "absent" is the right answer for them.
pub async fn bloom_snapshot(State(state): State<SharedState>, headers: HeaderMap) -> ApiResult<Response> {
    require_internal(&state, &headers)?;
    let mut conn = state.db.conn().await?;
    let tx = conn
        .client_mut()
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut out = Vec::new();
    let started_ms: i64 = tx.query_one(SNAPSHOT_TIME.sql, &[]).await.map_err(|e| ApiError::Internal(e.into()))?.get(0);
    out.extend_from_slice(&(started_ms - WATERMARK_MARGIN_MS).to_be_bytes());
    for (query, kind) in [(&LIVE_SESSIONS, RECORD_SESSION), (&LIVE_TOKENS, RECORD_TOKEN)] {
        for row in tx.query(query.sql, &[]).await.map_err(|e| ApiError::Internal(e.into()))? {
            let digest: &[u8] = row.get(0);
            out.extend_from_slice(&[kind, digest.len() as u8]);
            out.extend_from_slice(digest);
        }
    }
    for row in tx.query(ALL_USERS.sql, &[]).await.map_err(|e| ApiError::Internal(e.into()))? {
        let id: uuid::Uuid = row.get(0);
        out.extend_from_slice(&[RECORD_USER, 16]);
        out.extend_from_slice(id.as_bytes());
    }
    tx.commit().await.map_err(|e| ApiError::Internal(e.into()))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from(out)).into_response())
}

/// `POST /internal/v1/introspect` (form `token=`): introspection without client
/// authentication, for the proxy's forward-auth check of access tokens.
pub async fn introspect(State(state): State<SharedState>, headers: HeaderMap, form: FormBody) -> ApiResult<Response> {
    require_internal(&state, &headers)?;
    let conn = state.db.conn().await?;
    let body = introspection(&conn, form.require("token")?, Utc::now()).await?;
    Ok(Json(body).into_response())
}
