//! The statements that end credentials: each revokes in one statement and returns what
//! the cache invalidation needs (digests, or the newest creation time covered).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{FromRow, Query};

pub struct RevokedSessionRow {
    pub token_digest: Vec<u8>,
}

impl FromRow for RevokedSessionRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(RevokedSessionRow { token_digest: row.try_get("token_digest")? })
    }
}

pub const REVOKE_SESSION: Query<RevokedSessionRow> =
    Query::new("revoke_session", "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING token_digest");

/// How many sessions and tokens of a user were revoked, and the newest creation time
/// among them.
pub struct RevokedForUserRow {
    pub sessions: i64,
    pub tokens: i64,
    pub newest: Option<DateTime<Utc>>,
}

impl FromRow for RevokedForUserRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(RevokedForUserRow { sessions: row.try_get("sessions")?, tokens: row.try_get("tokens")?, newest: row.try_get("newest")? })
    }
}

/// Every session (but `keep_session`, if given) and every token of one user, at once.
pub const REVOKE_ALL_FOR_USER: Query<RevokedForUserRow> = Query::new(
    "revoke_all_for_user",
    "WITH s AS (
         UPDATE sessions SET revoked_at = $2
         WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $3 RETURNING created_at),
     t AS (
         UPDATE oauth_tokens SET revoked = true WHERE user_id = $1 AND NOT revoked RETURNING created_at)
     SELECT (SELECT count(*) FROM s) AS sessions, (SELECT count(*) FROM t) AS tokens,
            (SELECT max(c) FROM (SELECT created_at FROM s UNION ALL SELECT created_at FROM t) AS all_created(c)) AS newest",
);

/// How many tokens of a client were revoked (or went with it), and the newest creation
/// time among them.
pub struct RevokedForClientRow {
    pub tokens: i64,
    pub newest: Option<DateTime<Utc>>,
}

impl FromRow for RevokedForClientRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(RevokedForClientRow { tokens: row.try_get("tokens")?, newest: row.try_get("newest")? })
    }
}

/// Every live token of one OAuth client.
pub const REVOKE_ALL_FOR_CLIENT: Query<RevokedForClientRow> = Query::new(
    "revoke_all_for_client",
    "WITH t AS (UPDATE oauth_tokens SET revoked = true WHERE client_id = $1 AND NOT revoked RETURNING created_at)
     SELECT count(*) AS tokens, max(created_at) AS newest FROM t",
);

/// Whether a client was deleted, and the newest creation time among its tokens.
pub struct DeletedClientRow {
    pub deleted: i64,
    pub newest: Option<DateTime<Utc>>,
}

impl FromRow for DeletedClientRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(DeletedClientRow { deleted: row.try_get("deleted")?, newest: row.try_get("newest")? })
    }
}

/// Deletes a client (its tokens go with it, by cascade).
pub const DELETE_CLIENT: Query<DeletedClientRow> = Query::new(
    "client_delete",
    "WITH newest AS (SELECT max(created_at) AS created FROM oauth_tokens WHERE client_id = $1),
          gone AS (DELETE FROM oauth_clients WHERE client_id = $1 RETURNING client_id)
     SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT created FROM newest) AS newest",
);

/// The digests of one revoked issuance.
pub struct RevokedTokenRow {
    pub access_token: Vec<u8>,
    pub refresh_token: Option<Vec<u8>>,
}

impl FromRow for RevokedTokenRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(RevokedTokenRow { access_token: row.try_get("access_token")?, refresh_token: row.try_get("refresh_token")? })
    }
}

pub const REVOKE_TOKEN: Query<RevokedTokenRow> = Query::new(
    "revoke_token",
    "UPDATE oauth_tokens SET revoked = true WHERE id = $1 AND NOT revoked RETURNING access_token, refresh_token",
);
pub const REVOKE_FAMILY: Query<RevokedTokenRow> = Query::new(
    "revoke_token_family",
    "UPDATE oauth_tokens SET revoked = true WHERE family_id = $1 AND NOT revoked
     RETURNING access_token, refresh_token",
);
