//! Every way a credential stops being valid goes through here: one statement in
//! Postgres, the system of record, then one invalidation published to the proxies'
//! cache before the caller's request returns.

use chrono::{DateTime, Utc};
use quantaid_protocol::cache::key_from_digest;
use uuid::Uuid;

use crate::domain::invalidation::Invalidation;
use crate::storage::revocation::{
    RevokedTokenRow, DELETE_CLIENT, REVOKE_ALL_FOR_CLIENT, REVOKE_ALL_FOR_USER, REVOKE_FAMILY, REVOKE_SESSION, REVOKE_TOKEN,
};
use crate::storage::{Conn, StorageResult};
use crate::AppState;

fn token_tombstones(rows: &[RevokedTokenRow]) -> Vec<Invalidation> {
    rows.iter()
        .flat_map(|r| [Some(&r.access_token), r.refresh_token.as_ref()])
        .flatten()
        .map(|digest| Invalidation::Tombstone(key_from_digest("token", digest)))
        .collect()
}

pub async fn revoke_session(state: &AppState, conn: &Conn<'_>, session_id: Uuid, now: DateTime<Utc>) -> StorageResult<bool> {
    let Some(row) = conn.query_opt(&REVOKE_SESSION, &[&session_id, &now]).await? else { return Ok(false) };
    let key = key_from_digest("session", &row.token_digest);
    state.invalidator.publish(conn, &state.metrics, vec![Invalidation::Tombstone(key)]).await?;
    Ok(true)
}

/// Revokes all of a user's sessions (except `keep_session`) and tokens, with one
/// invalidation however many there are. Returns how many sessions and tokens it revoked.
pub async fn revoke_all_for_user(
    state: &AppState,
    conn: &Conn<'_>,
    user_id: Uuid,
    keep_session: Option<Uuid>,
    now: DateTime<Utc>,
) -> StorageResult<(i64, i64)> {
    let row = conn.query_one(&REVOKE_ALL_FOR_USER, &[&user_id, &now, &keep_session]).await?;
    // Cover every revoked credential even if the backend that issued it ran a little
    // ahead of this one's clock.
    let at_ms = row.newest.map_or(now, |n| n.max(now)).timestamp_millis();
    let marker = Invalidation::RevokedBefore { user_id, at_ms };
    state.invalidator.publish(conn, &state.metrics, vec![marker]).await?;
    Ok((row.sessions, row.tokens))
}

/// One issuance: its access token and its refresh token.
pub async fn revoke_token(state: &AppState, conn: &Conn<'_>, token_id: Uuid) -> StorageResult<bool> {
    let rows = conn.query(&REVOKE_TOKEN, &[&token_id]).await?;
    state.invalidator.publish(conn, &state.metrics, token_tombstones(&rows)).await?;
    Ok(!rows.is_empty())
}

/// Every token descended from one grant (refresh-token reuse, or revoking a refresh token).
pub async fn revoke_family(state: &AppState, conn: &Conn<'_>, family_id: Uuid) -> StorageResult<u64> {
    let rows = conn.query(&REVOKE_FAMILY, &[&family_id]).await?;
    state.invalidator.publish(conn, &state.metrics, token_tombstones(&rows)).await?;
    Ok(rows.len() as u64)
}

/// The client marker covering every token created up to now (or up to the newest
/// revoked one, if a backend with a clock ahead of this one issued it). The time is
/// taken after the statement, so a token committed before it is covered.
fn client_marker(client_id: &str, newest: Option<DateTime<Utc>>) -> Invalidation {
    let now = Utc::now();
    let at_ms = newest.map_or(now, |n| n.max(now)).timestamp_millis();
    Invalidation::ClientRevokedBefore { client_id: client_id.to_string(), at_ms }
}

/// Every token of an OAuth client stops working, on every replica, and proxies forget
/// the client's credentials they verified (disable, secret rotation). Returns how many
/// tokens it revoked.
pub async fn revoke_all_for_client(state: &AppState, conn: &Conn<'_>, client_id: &str) -> StorageResult<i64> {
    let row = conn.query_one(&REVOKE_ALL_FOR_CLIENT, &[&client_id]).await?;
    state.invalidator.publish(conn, &state.metrics, vec![client_marker(client_id, row.newest)]).await?;
    Ok(row.tokens)
}

/// Deletes an OAuth client with every token it holds; `false` if there was none.
pub async fn delete_client(state: &AppState, conn: &Conn<'_>, client_id: &str) -> StorageResult<bool> {
    let row = conn.query_one(&DELETE_CLIENT, &[&client_id]).await?;
    if row.deleted == 0 {
        return Ok(false);
    }
    state.invalidator.publish(conn, &state.metrics, vec![client_marker(client_id, row.newest)]).await?;
    Ok(true)
}

/// The user is gone, and with them (by cascade) every session and token.
pub async fn user_deleted(state: &AppState, conn: &Conn<'_>, user_id: Uuid, now: DateTime<Utc>) -> StorageResult<()> {
    let items = vec![Invalidation::RevokedBefore { user_id, at_ms: now.timestamp_millis() }, Invalidation::UserChanged(user_id)];
    state.invalidator.publish(conn, &state.metrics, items).await
}

/// The user record changed or was deleted: cached copies must not be served.
pub async fn user_changed(state: &AppState, conn: &Conn<'_>, user_id: Uuid) -> StorageResult<()> {
    state.invalidator.publish(conn, &state.metrics, vec![Invalidation::UserChanged(user_id)]).await
}
