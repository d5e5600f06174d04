//! `GET /v1/audit-logs`, and the keyset cursor every paginated listing uses.

use std::net::IpAddr;

use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::domain::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{Authenticated, QueryParams};
use crate::storage::audit::{build_query, AuditQuery, AuditRow, LIST_NAME};
use crate::SharedState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    pub user_id: Option<Uuid>,
    pub action: Option<String>,
    pub ip_address: Option<IpAddr>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// An opaque keyset cursor: the last row's `(created_at, id)`.
pub fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", created_at.timestamp_micros()))
}

pub fn decode_cursor(cursor: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let bad = || ApiError::InvalidRequest("malformed cursor".into());
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

impl AuditFilter {
    /// The page the filter asks for (one row more than shown, to know whether another
    /// page follows), or `400` for a bad cursor or limit.
    fn to_query(&self) -> ApiResult<AuditQuery> {
        let after = self.cursor.as_deref().map(decode_cursor).transpose()?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::InvalidRequest(format!("limit must be between 1 and {MAX_LIMIT}")));
        }
        Ok(AuditQuery {
            user_id: self.user_id,
            action: self.action.clone(),
            ip_address: self.ip_address,
            since: self.since,
            after,
            limit: limit + 1,
        })
    }
}

/// `GET /v1/audit-logs`: admin, or a user's own session for `user_id=<its user>` (so
/// the account's owner sees failed logins and MFA guesses against it).
pub async fn list(
    State(state): State<SharedState>,
    Authenticated(caller): Authenticated,
    QueryParams(filter): QueryParams<AuditFilter>,
) -> ApiResult<Json<Value>> {
    let own = matches!((&caller, filter.user_id), (Caller::Session(s), Some(u)) if s.user_id == u);
    if !caller.is_admin() && !own {
        return Err(ApiError::Forbidden("admin rights are required, or user_id must be your own"));
    }
    let (sql, params) = build_query(&filter.to_query()?);
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT) as usize;
    let conn = state.db.conn().await?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    let rows: Vec<AuditRow> = conn.query_unprepared(LIST_NAME, &sql, &refs).await?;
    let next_cursor = (rows.len() > limit).then(|| {
        let last = &rows[limit - 1];
        encode_cursor(last.created_at, last.id)
    });
    let items: Vec<Value> = rows
        .iter()
        .take(limit)
        .map(|r| {
            json!({
                "id": r.id,
                "user_id": r.user_id,
                "action": r.action,
                "ip_address": r.ip_address,
                "details": r.details,
                "created_at": r.created_at,
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let at = DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        for bad in ["", "!!", "bm90aGluZw", &URL_SAFE_NO_PAD.encode("12:not-a-uuid")] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_outside_the_range_are_refused() {
        assert!(AuditFilter { limit: Some(0), ..Default::default() }.to_query().is_err());
        assert!(AuditFilter { limit: Some(MAX_LIMIT + 1), ..Default::default() }.to_query().is_err());
        assert_eq!(AuditFilter::default().to_query().unwrap().limit, DEFAULT_LIMIT + 1);
    }
}
