//! Every way a credential stops being valid goes through here, so each is one
//! statement in Postgres, the system of record.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::{Conn, Query};
use crate::error::ApiResult;

const REVOKE_SESSION: Query = Query {
    name: "revoke_session",
    sql: "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
};

/// Every session (but `keep_session`, if given) and every token of one user, at once.
const REVOKE_ALL_FOR_USER: Query = Query {
    name: "revoke_all_for_user",
    sql: "WITH s AS (
              UPDATE sessions SET revoked_at = $2
              WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $3 RETURNING 1),
          t AS (
              UPDATE oauth_tokens SET revoked = true WHERE user_id = $1 AND NOT revoked RETURNING 1)
          SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM t)",
};

const REVOKE_TOKEN: Query =
    Query { name: "revoke_token", sql: "UPDATE oauth_tokens SET revoked = true WHERE id = $1 AND NOT revoked" };

const REVOKE_FAMILY: Query = Query {
    name: "revoke_token_family",
    sql: "UPDATE oauth_tokens SET revoked = true WHERE family_id = $1 AND NOT revoked",
};

pub async fn revoke_session(conn: &Conn<'_>, session_id: Uuid, now: DateTime<Utc>) -> ApiResult<bool> {
    Ok(conn.execute(&REVOKE_SESSION, &[&session_id, &now]).await? > 0)
}

/// Revokes all of a user's sessions (except `keep_session`) and tokens. Returns how many
/// sessions and tokens it revoked.
pub async fn revoke_all_for_user(
    conn: &Conn<'_>,
    user_id: Uuid,
    keep_session: Option<Uuid>,
    now: DateTime<Utc>,
) -> ApiResult<(i64, i64)> {
    let row = conn.query_one(&REVOKE_ALL_FOR_USER, &[&user_id, &now, &keep_session]).await?;
    Ok((row.get(0), row.get(1)))
}

/// One issuance: its access token and its refresh token.
pub async fn revoke_token(conn: &Conn<'_>, token_id: Uuid) -> ApiResult<bool> {
    Ok(conn.execute(&REVOKE_TOKEN, &[&token_id]).await? > 0)
}

/// Every token descended from one grant (refresh-token reuse, or revoking a refresh token).
pub async fn revoke_family(conn: &Conn<'_>, family_id: Uuid) -> ApiResult<u64> {
    conn.execute(&REVOKE_FAMILY, &[&family_id]).await
}
