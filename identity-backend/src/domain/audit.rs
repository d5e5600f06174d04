//! The audit log: what happened, to whom, from where. Written in the request that does
//! the thing; queried newest first through the indexes docs/design.md requires.

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

use crate::domain::auth::{Authenticated, Caller};
use crate::domain::security::token::new_id;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::QueryParams;
use crate::storage::{Conn, Query};
use crate::SharedState;

/// Audited actions. The strings are the `action` column and the API filter values.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    LoginSuccess,
    LoginFailure,
    MfaSuccess,
    MfaFailure,
    MfaThrottled,
    MfaEnrolled,
    MfaRemoved,
    Reauthenticated,
    Logout,
    LogoutAll,
    TokenIssue,
    TokenRevoke,
    RefreshTokenReuse,
    UserCreate,
    UserUpdate,
    UserDelete,
    PasswordChange,
    ClientCreate,
    ClientDisable,
    ClientEnable,
    ClientDelete,
    ClientSecretRotate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::LoginSuccess => "login.success",
            Action::LoginFailure => "login.failure",
            Action::MfaSuccess => "mfa.success",
            Action::MfaFailure => "mfa.failure",
            Action::MfaThrottled => "mfa.throttled",
            Action::MfaEnrolled => "mfa.enrolled",
            Action::MfaRemoved => "mfa.removed",
            Action::Reauthenticated => "session.reauthenticated",
            Action::Logout => "logout",
            Action::LogoutAll => "logout_all",
            Action::TokenIssue => "token.issue",
            Action::TokenRevoke => "token.revoke",
            Action::RefreshTokenReuse => "token.refresh_reuse",
            Action::UserCreate => "user.create",
            Action::UserUpdate => "user.update",
            Action::UserDelete => "user.delete",
            Action::PasswordChange => "user.password_change",
            Action::ClientCreate => "client.create",
            Action::ClientDisable => "client.disable",
            Action::ClientEnable => "client.enable",
            Action::ClientDelete => "client.delete",
            Action::ClientSecretRotate => "client.secret_rotate",
        }
    }
}

const INSERT: Query = Query {
    name: "audit_insert",
    sql: "INSERT INTO audit_logs (id, user_id, action, ip_address, details, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
};

/// Appends one audit entry. `details` must never hold secrets.
pub async fn record(conn: &Conn<'_>, user_id: Option<Uuid>, action: Action, ip: IpAddr, details: Value) -> ApiResult<()> {
    let now = Utc::now();
    conn.execute(&INSERT, &[&new_id(now), &user_id, &action.as_str(), &ip, &details, &now]).await?;
    Ok(())
}

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

/// Builds the audit query for `filter`. Only the filters given appear in the SQL, so
/// the planner sees the real shape and picks `idx_audit_logs_user_action` or
/// `idx_audit_logs_ip` (a catch-all `($1 IS NULL OR ...)` form would defeat them).
pub fn build_query(filter: &AuditFilter) -> ApiResult<(String, Vec<Box<dyn ToSql + Sync + Send>>)> {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut add = |clause: &str, value: Box<dyn ToSql + Sync + Send>, params: &mut Vec<_>| {
        params.push(value);
        clauses.push(clause.replace('?', &format!("${}", params.len())));
    };
    if let Some(user_id) = filter.user_id {
        add("user_id = ?", Box::new(user_id), &mut params);
    }
    if let Some(action) = &filter.action {
        add("action = ?", Box::new(action.clone()), &mut params);
    }
    if let Some(ip) = filter.ip_address {
        add("ip_address = ?", Box::new(ip), &mut params);
    }
    if let Some(since) = filter.since {
        add("created_at >= ?", Box::new(since), &mut params);
    }
    if let Some(cursor) = &filter.cursor {
        let (at, id) = decode_cursor(cursor)?;
        add("created_at <= ?", Box::new(at), &mut params);
        let n = params.len();
        params.push(Box::new(id));
        clauses.push(format!("(created_at < ${n} OR id < ${})", n + 1));
    }
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    params.push(Box::new(limit + 1));
    let where_sql = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    let sql = format!(
        "SELECT id, user_id, action, ip_address, details, created_at FROM audit_logs {where_sql}
         ORDER BY created_at DESC, id DESC LIMIT ${}",
        params.len()
    );
    Ok((sql, params))
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
    let (sql, params) = build_query(&filter)?;
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT) as usize;
    let conn = state.db.conn().await?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    let rows = conn.query_unprepared("audit_list", &sql, &refs).await?;
    let next_cursor = (rows.len() > limit).then(|| {
        let last = &rows[limit - 1];
        encode_cursor(last.get(5), last.get(0))
    });
    let items: Vec<Value> = rows
        .iter()
        .take(limit)
        .map(|r| {
            json!({
                "id": r.get::<_, Uuid>(0),
                "user_id": r.get::<_, Option<Uuid>>(1),
                "action": r.get::<_, String>(2),
                "ip_address": r.get::<_, Option<IpAddr>>(3),
                "details": r.get::<_, Value>(4),
                "created_at": r.get::<_, DateTime<Utc>>(5),
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
    fn query_names_only_the_given_filters() {
        let f = AuditFilter { user_id: Some(Uuid::now_v7()), action: Some("logout".into()), ..Default::default() };
        let (sql, params) = build_query(&f).unwrap();
        assert!(sql.contains("WHERE user_id = $1 AND action = $2"), "{sql}");
        assert!(sql.contains("LIMIT $3"));
        assert_eq!(params.len(), 3);
        assert!(build_query(&AuditFilter { limit: Some(0), ..Default::default() }).is_err());
    }
}
