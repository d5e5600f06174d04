//! The `sessions` and `mfa_challenges` tables.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Count, FromRow, Query};

/// A live session of an enabled user.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub mfa_verified: bool,
    /// When the session last presented the password or a TOTP code (at creation, or
    /// through `POST /v1/auth/reauthenticate`).
    pub authenticated_at: DateTime<Utc>,
}

impl FromRow for SessionRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(SessionRow {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            mfa_verified: row.try_get("mfa_verified")?,
            authenticated_at: row.try_get("authenticated_at")?,
        })
    }
}

pub const SESSION_BY_DIGEST: Query<SessionRow> = Query::new(
    "session_by_digest",
    "SELECT s.id, s.user_id, s.created_at, s.expires_at, s.mfa_verified,
            COALESCE(s.authenticated_at, s.created_at) AS authenticated_at
     FROM sessions s JOIN users u ON u.id = s.user_id
     WHERE s.token_digest = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND NOT u.disabled",
);
pub const INSERT_SESSION: Query = Query::new(
    "session_insert",
    "INSERT INTO sessions (id, token_digest, user_id, mfa_verified, ip_address, created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)",
);
pub const SESSION_REAUTHENTICATED: Query =
    Query::new("session_reauthenticated", "UPDATE sessions SET authenticated_at = $2 WHERE id = $1 AND revoked_at IS NULL");
pub const COUNT_ACTIVE_SESSIONS: Query<Count> =
    Query::new("session_count_active", "SELECT count(*) AS count FROM sessions WHERE revoked_at IS NULL AND expires_at > now()");
pub const DELETE_DEAD_SESSIONS: Query = Query::new("session_delete_dead", "DELETE FROM sessions WHERE expires_at < $1");

pub const INSERT_MFA_CHALLENGE: Query =
    Query::new("mfa_challenge_insert", "INSERT INTO mfa_challenges (token_digest, user_id, expires_at) VALUES ($1, $2, $3)");

/// The user an MFA challenge was issued to.
pub struct ChallengeRow {
    pub user_id: Uuid,
}

impl FromRow for ChallengeRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ChallengeRow { user_id: row.try_get("user_id")? })
    }
}

/// Counts one attempt on a live challenge before its code is checked, in one statement,
/// so concurrent attempts cannot all read the same count (`failures` counts attempts:
/// the one that succeeds is the last). No row: unknown, used, expired or burnt out.
pub const MFA_CHALLENGE_ATTEMPT: Query<ChallengeRow> = Query::new(
    "mfa_challenge_attempt",
    "UPDATE mfa_challenges SET failures = failures + 1
     WHERE token_digest = $1 AND used_at IS NULL AND expires_at > $2 AND failures < $3
     RETURNING user_id",
);
/// Consumes the challenge and the TOTP step together: a replayed code or a reused
/// challenge matches no row.
pub const MFA_CONSUME: Query = Query::new(
    "mfa_consume",
    "WITH c AS (
         UPDATE mfa_challenges SET used_at = $3 WHERE token_digest = $1 AND used_at IS NULL RETURNING user_id)
     UPDATE user_totp t SET last_used_step = $2 FROM c
     WHERE t.user_id = c.user_id AND t.last_used_step < $2 RETURNING t.user_id",
);
pub const DELETE_DEAD_CHALLENGES: Query = Query::new("mfa_challenge_delete_dead", "DELETE FROM mfa_challenges WHERE expires_at < $1");
