//! The `oauth_tokens` table: one row per issuance, holding the digests of its access
//! token and of its refresh token, if any.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{FromRow, Query};

/// A live access token, with its user's name when it has a user.
pub struct AccessTokenRow {
    pub client_id: String,
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    pub scope: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl FromRow for AccessTokenRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(AccessTokenRow {
            client_id: row.try_get("client_id")?,
            user_id: row.try_get("user_id")?,
            username: row.try_get("username")?,
            scope: row.try_get("scope")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
        })
    }
}

pub const ACCESS_TOKEN_BY_DIGEST: Query<AccessTokenRow> = Query::new(
    "access_token_by_digest",
    "SELECT t.client_id, t.user_id, u.username, t.scope, t.created_at, t.expires_at
     FROM oauth_tokens t LEFT JOIN users u ON u.id = t.user_id
     WHERE t.access_token = $1 AND NOT t.revoked AND t.expires_at > $2
       AND (t.user_id IS NULL OR u.disabled = false)",
);

/// The issuance a refresh token belongs to, live or not: the token endpoint,
/// introspection and revocation each decide what its state means.
pub struct RefreshTokenRow {
    pub id: Uuid,
    pub family_id: Uuid,
    pub client_id: String,
    pub user_id: Option<Uuid>,
    pub scope: String,
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub refresh_rotated_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

impl FromRow for RefreshTokenRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(RefreshTokenRow {
            id: row.try_get("id")?,
            family_id: row.try_get("family_id")?,
            client_id: row.try_get("client_id")?,
            user_id: row.try_get("user_id")?,
            scope: row.try_get("scope")?,
            refresh_expires_at: row.try_get("refresh_expires_at")?,
            refresh_rotated_at: row.try_get("refresh_rotated_at")?,
            revoked: row.try_get("revoked")?,
        })
    }
}

pub const REFRESH_BY_DIGEST: Query<RefreshTokenRow> = Query::new(
    "refresh_token_by_digest",
    "SELECT id, family_id, client_id, user_id, scope, refresh_expires_at, refresh_rotated_at, revoked
     FROM oauth_tokens WHERE refresh_token = $1",
);

/// Whose an access token is, live or not (revocation).
pub struct TokenOwnerRow {
    pub id: Uuid,
    pub family_id: Uuid,
    pub client_id: String,
    pub user_id: Option<Uuid>,
}

impl FromRow for TokenOwnerRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(TokenOwnerRow {
            id: row.try_get("id")?,
            family_id: row.try_get("family_id")?,
            client_id: row.try_get("client_id")?,
            user_id: row.try_get("user_id")?,
        })
    }
}

pub const TOKEN_OWNER_BY_ACCESS: Query<TokenOwnerRow> =
    Query::new("token_owner_by_access", "SELECT id, family_id, client_id, user_id FROM oauth_tokens WHERE access_token = $1");

/// A new issuance and its audit entry in one statement: one round trip and one commit
/// (the hot path of token issuance), and never a token without its audit entry.
pub const INSERT_TOKEN_AND_AUDIT: Query = Query::new(
    "token_insert_audited",
    "WITH issued AS (
         INSERT INTO oauth_tokens (id, access_token, refresh_token, family_id, client_id, user_id, scope, grant_type,
                                   created_at, expires_at, refresh_expires_at)
         VALUES ($1, $2, $3, $1, $4, $5, $6, $7, $8, $9, $10))
     INSERT INTO audit_logs (id, user_id, action, ip_address, details, created_at)
     VALUES ($11, $5, $12, $13, $14, $8)",
);
/// Marks the old refresh token used and inserts its successor in one statement, so two
/// racing uses cannot both succeed and a failure cannot lose the chain.
pub const ROTATE: Query = Query::new(
    "refresh_token_rotate",
    "WITH old AS (
         UPDATE oauth_tokens SET refresh_rotated_at = $8
         WHERE id = $1 AND refresh_rotated_at IS NULL AND NOT revoked RETURNING family_id, client_id, user_id)
     INSERT INTO oauth_tokens (id, access_token, refresh_token, family_id, client_id, user_id, scope, grant_type,
                               created_at, expires_at, refresh_expires_at)
     SELECT $2, $3, $4, old.family_id, old.client_id, old.user_id, $5, 'refresh_token', $8, $6, $7 FROM old
     RETURNING id",
);
pub const DELETE_DEAD_TOKENS: Query = Query::new(
    "token_delete_dead",
    "DELETE FROM oauth_tokens WHERE expires_at < $1 AND (refresh_expires_at IS NULL OR refresh_expires_at < $1)",
);
