//! The `audit_logs` table: appended to in the request that does the thing, read newest
//! first through the indexes docs/design.md requires.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{FromRow, Query};

pub const INSERT: Query = Query::new(
    "audit_insert",
    "INSERT INTO audit_logs (id, user_id, action, ip_address, details, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
);

pub struct AuditRow {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub action: String,
    pub ip_address: Option<IpAddr>,
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

impl FromRow for AuditRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(AuditRow {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            action: row.try_get("action")?,
            ip_address: row.try_get("ip_address")?,
            details: row.try_get("details")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// The name of the audit listing on the database metrics.
pub const LIST_NAME: &str = "audit_list";

/// One page of the audit log: entries matching every filter given, newest first, after
/// the keyset position `after` (`(created_at, id)` of the previous page's last entry).
#[derive(Debug, Default)]
pub struct AuditQuery {
    pub user_id: Option<Uuid>,
    pub action: Option<String>,
    pub ip_address: Option<IpAddr>,
    pub since: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Rows to fetch.
    pub limit: i64,
}

/// Builds the SQL for `query`. Only the filters given appear in it, so the planner sees
/// the real shape and picks `idx_audit_logs_user_action` or `idx_audit_logs_ip` (a
/// catch-all `($1 IS NULL OR ...)` form would defeat them).
pub fn build_query(query: &AuditQuery) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut add = |clause: &str, value: Box<dyn ToSql + Sync + Send>, params: &mut Vec<_>| {
        params.push(value);
        clauses.push(clause.replace('?', &format!("${}", params.len())));
    };
    if let Some(user_id) = query.user_id {
        add("user_id = ?", Box::new(user_id), &mut params);
    }
    if let Some(action) = &query.action {
        add("action = ?", Box::new(action.clone()), &mut params);
    }
    if let Some(ip) = query.ip_address {
        add("ip_address = ?", Box::new(ip), &mut params);
    }
    if let Some(since) = query.since {
        add("created_at >= ?", Box::new(since), &mut params);
    }
    if let Some((at, id)) = query.after {
        add("created_at <= ?", Box::new(at), &mut params);
        let n = params.len();
        params.push(Box::new(id));
        clauses.push(format!("(created_at < ${n} OR id < ${})", n + 1));
    }
    params.push(Box::new(query.limit));
    let where_sql = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    let sql = format!(
        "SELECT id, user_id, action, ip_address, details, created_at FROM audit_logs {where_sql}
         ORDER BY created_at DESC, id DESC LIMIT ${}",
        params.len()
    );
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_only_the_given_filters() {
        let q = AuditQuery { user_id: Some(Uuid::now_v7()), action: Some("logout".into()), limit: 51, ..Default::default() };
        let (sql, params) = build_query(&q);
        assert!(sql.contains("WHERE user_id = $1 AND action = $2"), "{sql}");
        assert!(sql.contains("LIMIT $3"));
        assert_eq!(params.len(), 3);
    }
}
