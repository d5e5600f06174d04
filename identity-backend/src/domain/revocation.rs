//! Every way a credential stops being valid goes through here: one statement in
//! Postgres, the system of record, then one invalidation published to the proxies'
//! cache before the caller's request returns.

use chrono::{DateTime, Utc};
use quantaid_protocol::cache::key_from_digest;
use uuid::Uuid;

use crate::domain::invalidation::Invalidation;
use crate::error::ApiResult;
use crate::storage::{Conn, Query};
use crate::AppState;

const REVOKE_SESSION: Query = Query {
    name: "revoke_session",
    sql: "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING token_digest",
};

/// Every session (but `keep_session`, if given) and every token of one user, at once.
/// Returns the counts and the newest creation time among them (Unix ms).
const REVOKE_ALL_FOR_USER: Query = Query {
    name: "revoke_all_for_user",
    sql: "WITH s AS (
              UPDATE sessions SET revoked_at = $2
              WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $3 RETURNING created_at),
          t AS (
              UPDATE oauth_tokens SET revoked = true WHERE user_id = $1 AND NOT revoked RETURNING created_at)
          SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM t),
                 (SELECT max(c) FROM (SELECT created_at FROM s UNION ALL SELECT created_at FROM t) AS all_created(c))",
};

/// Every live token of one OAuth client; returns how many and the newest creation time.
const REVOKE_ALL_FOR_CLIENT: Query = Query {
    name: "revoke_all_for_client",
    sql: "WITH t AS (UPDATE oauth_tokens SET revoked = true WHERE client_id = $1 AND NOT revoked RETURNING created_at)
          SELECT count(*), max(created_at) FROM t",
};

/// Deletes a client (its tokens go with it, by cascade); returns whether it existed and
/// the newest creation time among its tokens.
const DELETE_CLIENT: Query = Query {
    name: "client_delete",
    sql: "WITH newest AS (SELECT max(created_at) AS created FROM oauth_tokens WHERE client_id = $1),
               gone AS (DELETE FROM oauth_clients WHERE client_id = $1 RETURNING client_id)
          SELECT (SELECT count(*) FROM gone), (SELECT created FROM newest)",
};

const REVOKE_TOKEN: Query = Query {
    name: "revoke_token",
    sql: "UPDATE oauth_tokens SET revoked = true WHERE id = $1 AND NOT revoked RETURNING access_token, refresh_token",
};

const REVOKE_FAMILY: Query = Query {
    name: "revoke_token_family",
    sql: "UPDATE oauth_tokens SET revoked = true WHERE family_id = $1 AND NOT revoked
          RETURNING access_token, refresh_token",
};

fn token_tombstones(rows: &[tokio_postgres::Row]) -> Vec<Invalidation> {
    rows.iter()
        .flat_map(|r| [Some(r.get::<_, Vec<u8>>(0)), r.get::<_, Option<Vec<u8>>>(1)])
        .flatten()
        .map(|digest| Invalidation::Tombstone(key_from_digest("token", &digest)))
        .collect()
}

pub async fn revoke_session(state: &AppState, conn: &Conn<'_>, session_id: Uuid, now: DateTime<Utc>) -> ApiResult<bool> {
    let Some(row) = conn.query_opt(&REVOKE_SESSION, &[&session_id, &now]).await? else { return Ok(false) };
    let key = key_from_digest("session", row.get::<_, &[u8]>(0));
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
) -> ApiResult<(i64, i64)> {
    let row = conn.query_one(&REVOKE_ALL_FOR_USER, &[&user_id, &now, &keep_session]).await?;
    // Cover every revoked credential even if the backend that issued it ran a little
    // ahead of this one's clock.
    let newest: Option<DateTime<Utc>> = row.get(2);
    let at_ms = newest.map_or(now, |n| n.max(now)).timestamp_millis();
    let marker = Invalidation::RevokedBefore { user_id, at_ms };
    state.invalidator.publish(conn, &state.metrics, vec![marker]).await?;
    Ok((row.get(0), row.get(1)))
}

/// One issuance: its access token and its refresh token.
pub async fn revoke_token(state: &AppState, conn: &Conn<'_>, token_id: Uuid) -> ApiResult<bool> {
    let rows = conn.query(&REVOKE_TOKEN, &[&token_id]).await?;
    state.invalidator.publish(conn, &state.metrics, token_tombstones(&rows)).await?;
    Ok(!rows.is_empty())
}

/// Every token descended from one grant (refresh-token reuse, or revoking a refresh token).
pub async fn revoke_family(state: &AppState, conn: &Conn<'_>, family_id: Uuid) -> ApiResult<u64> {
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
pub async fn revoke_all_for_client(state: &AppState, conn: &Conn<'_>, client_id: &str) -> ApiResult<i64> {
    let row = conn.query_one(&REVOKE_ALL_FOR_CLIENT, &[&client_id]).await?;
    state.invalidator.publish(conn, &state.metrics, vec![client_marker(client_id, row.get(1))]).await?;
    Ok(row.get(0))
}

/// Deletes an OAuth client with every token it holds; `false` if there was none.
pub async fn delete_client(state: &AppState, conn: &Conn<'_>, client_id: &str) -> ApiResult<bool> {
    let row = conn.query_one(&DELETE_CLIENT, &[&client_id]).await?;
    if row.get::<_, i64>(0) == 0 {
        return Ok(false);
    }
    state.invalidator.publish(conn, &state.metrics, vec![client_marker(client_id, row.get(1))]).await?;
    Ok(true)
}

/// The user is gone, and with them (by cascade) every session and token.
pub async fn user_deleted(state: &AppState, conn: &Conn<'_>, user_id: Uuid, now: DateTime<Utc>) -> ApiResult<()> {
    let items = vec![Invalidation::RevokedBefore { user_id, at_ms: now.timestamp_millis() }, Invalidation::UserChanged(user_id)];
    state.invalidator.publish(conn, &state.metrics, items).await
}

/// The user record changed or was deleted: cached copies must not be served.
pub async fn user_changed(state: &AppState, conn: &Conn<'_>, user_id: Uuid) -> ApiResult<()> {
    state.invalidator.publish(conn, &state.metrics, vec![Invalidation::UserChanged(user_id)]).await
}
