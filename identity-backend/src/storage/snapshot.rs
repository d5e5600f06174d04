//! What the proxies' Bloom filters are built from: every live session and token digest
//! and every user id created since a time, read in one repeatable-read snapshot.

use chrono::{DateTime, Utc};
use quantaid_protocol::snapshot::SnapshotWriter;
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use super::{Conn, StorageError, StorageResult};

const SNAPSHOT_TIME: &str = "SELECT (extract(epoch FROM now()) * 1000)::bigint AS now_ms";
const LIVE_SESSIONS: &str =
    "SELECT token_digest AS digest FROM sessions WHERE created_at >= $1 AND revoked_at IS NULL AND expires_at > now()";
const LIVE_TOKENS: &str = "SELECT access_token AS digest FROM oauth_tokens WHERE created_at >= $1 AND NOT revoked AND expires_at > now()
     UNION ALL
     SELECT refresh_token FROM oauth_tokens
     WHERE created_at >= $1 AND NOT revoked AND refresh_token IS NOT NULL AND refresh_rotated_at IS NULL
       AND refresh_expires_at > now()";
const USERS: &str = "SELECT id FROM users WHERE created_at >= $1";

/// Writes the snapshot of everything created at or after `since`; its watermark is the
/// snapshot's start (database clock) less `margin_ms`. Any database failure here is a
/// fault (`Other`), as it always was for this endpoint.
pub async fn write_snapshot(conn: &mut Conn<'_>, since: DateTime<Utc>, margin_ms: i64) -> StorageResult<Vec<u8>> {
    let fault = |e: tokio_postgres::Error| StorageError::Other(e.into());
    let tx = conn
        .client_mut()
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(fault)?;
    let started_ms: i64 = tx.query_one(SNAPSHOT_TIME, &[]).await.map_err(fault)?.try_get("now_ms").map_err(fault)?;
    let mut out = SnapshotWriter::new(started_ms - margin_ms);
    for row in tx.query(LIVE_SESSIONS, &[&since]).await.map_err(fault)? {
        out.session(row.try_get("digest").map_err(fault)?);
    }
    for row in tx.query(LIVE_TOKENS, &[&since]).await.map_err(fault)? {
        out.token(row.try_get("digest").map_err(fault)?);
    }
    for row in tx.query(USERS, &[&since]).await.map_err(fault)? {
        let id: Uuid = row.try_get("id").map_err(fault)?;
        out.user(&id);
    }
    tx.commit().await.map_err(fault)?;
    Ok(out.finish())
}
