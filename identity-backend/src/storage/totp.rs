//! The `user_totp` table.

use tokio_postgres::Row;

use super::{FromRow, Query};

/// A user's name and whether a TOTP enrolment is confirmed (`None`: none at all).
pub struct TotpStateRow {
    pub username: String,
    pub confirmed: Option<bool>,
}

impl FromRow for TotpStateRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(TotpStateRow { username: row.try_get("username")?, confirmed: row.try_get("confirmed")? })
    }
}

pub const TOTP_STATE: Query<TotpStateRow> =
    Query::new("totp_state", "SELECT u.username, t.confirmed FROM users u LEFT JOIN user_totp t ON t.user_id = u.id WHERE u.id = $1");
pub const TOTP_UPSERT_PENDING: Query = Query::new(
    "totp_upsert_pending",
    "INSERT INTO user_totp (user_id, secret, confirmed, last_used_step, created_at) VALUES ($1, $2, false, 0, $3)
     ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret, last_used_step = 0, created_at = EXCLUDED.created_at
     WHERE NOT user_totp.confirmed",
);

/// A TOTP secret and the last step a code of it was used for.
pub struct TotpSecretRow {
    pub secret: Vec<u8>,
    pub last_used_step: i64,
}

impl FromRow for TotpSecretRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(TotpSecretRow { secret: row.try_get("secret")?, last_used_step: row.try_get("last_used_step")? })
    }
}

pub const TOTP_PENDING_SECRET: Query<TotpSecretRow> =
    Query::new("totp_pending_secret", "SELECT secret, last_used_step FROM user_totp WHERE user_id = $1 AND NOT confirmed");
/// Confirms enrolment and records the step used, so the confirming code cannot be
/// replayed for a login.
pub const TOTP_CONFIRM: Query = Query::new(
    "totp_confirm",
    "WITH t AS (
         UPDATE user_totp SET confirmed = true, last_used_step = $2
         WHERE user_id = $1 AND NOT confirmed AND last_used_step < $2 RETURNING user_id)
     UPDATE users u SET mfa_enabled = true, updated_at = $3 FROM t WHERE u.id = t.user_id RETURNING u.id",
);
/// The confirmed secret of an enabled user.
pub const TOTP_SECRET: Query<TotpSecretRow> = Query::new(
    "totp_secret",
    "SELECT t.secret, t.last_used_step FROM user_totp t JOIN users u ON u.id = t.user_id
     WHERE t.user_id = $1 AND t.confirmed AND NOT u.disabled",
);
/// Records the step of a code used outside a login, so it cannot be used again.
pub const TOTP_USE_STEP: Query = Query::new(
    "totp_use_step",
    "UPDATE user_totp SET last_used_step = $2 WHERE user_id = $1 AND confirmed AND last_used_step < $2 RETURNING user_id",
);
pub const TOTP_REMOVE: Query = Query::new(
    "totp_remove",
    "WITH t AS (DELETE FROM user_totp WHERE user_id = $1 RETURNING user_id)
     UPDATE users u SET mfa_enabled = false, updated_at = $2 FROM t WHERE u.id = t.user_id RETURNING u.id",
);
