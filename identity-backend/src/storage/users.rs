//! The `users` table.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{FromRow, Query};

/// A user as the API shows it.
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub disabled: bool,
    pub mfa_enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl FromRow for UserRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(UserRow {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            email: row.try_get("email")?,
            disabled: row.try_get("disabled")?,
            mfa_enabled: row.try_get("mfa_enabled")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

pub const INSERT_USER: Query<UserRow> = Query::new(
    "user_insert",
    "INSERT INTO users (id, username, email, password_hash, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $5)
     RETURNING id, username, email, disabled, mfa_enabled, created_at, updated_at",
);
pub const USER_BY_ID: Query<UserRow> =
    Query::new("user_by_id", "SELECT id, username, email, disabled, mfa_enabled, created_at, updated_at FROM users WHERE id = $1");
pub const LIST_FIRST: Query<UserRow> = Query::new(
    "user_list",
    "SELECT id, username, email, disabled, mfa_enabled, created_at, updated_at FROM users
     ORDER BY created_at DESC, id DESC LIMIT $1",
);
pub const LIST_AFTER: Query<UserRow> = Query::new(
    "user_list_after",
    "SELECT id, username, email, disabled, mfa_enabled, created_at, updated_at FROM users
     WHERE created_at <= $1 AND (created_at < $1 OR id < $2)
     ORDER BY created_at DESC, id DESC LIMIT $3",
);
pub const UPDATE_USER: Query<UserRow> = Query::new(
    "user_update",
    "UPDATE users SET email = COALESCE($2, email), disabled = COALESCE($3, disabled), updated_at = $4
     WHERE id = $1 RETURNING id, username, email, disabled, mfa_enabled, created_at, updated_at",
);
pub const DELETE_USER: Query = Query::new("user_delete", "DELETE FROM users WHERE id = $1");

pub struct PasswordHashRow {
    pub password_hash: String,
}

impl FromRow for PasswordHashRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(PasswordHashRow { password_hash: row.try_get("password_hash")? })
    }
}

pub const PASSWORD_HASH_BY_ID: Query<PasswordHashRow> = Query::new("user_password_hash", "SELECT password_hash FROM users WHERE id = $1");
pub const SET_PASSWORD: Query = Query::new("user_set_password", "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1");

/// What a password login needs to know of a user.
pub struct LoginRow {
    pub id: Uuid,
    pub password_hash: String,
    pub disabled: bool,
    pub mfa_enabled: bool,
}

impl FromRow for LoginRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(LoginRow {
            id: row.try_get("id")?,
            password_hash: row.try_get("password_hash")?,
            disabled: row.try_get("disabled")?,
            mfa_enabled: row.try_get("mfa_enabled")?,
        })
    }
}

pub const USER_BY_USERNAME: Query<LoginRow> =
    Query::new("user_by_username", "SELECT id, password_hash, disabled, mfa_enabled FROM users WHERE username = $1");

pub struct UsernameRow {
    pub username: String,
}

impl FromRow for UsernameRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(UsernameRow { username: row.try_get("username")? })
    }
}

/// Any user's name, disabled or not.
pub const USERNAME_OF: Query<UsernameRow> = Query::new("username_of", "SELECT username FROM users WHERE id = $1");

/// An enabled user's name and email (introspection, userinfo).
pub struct ContactRow {
    pub username: String,
    pub email: String,
}

impl FromRow for ContactRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ContactRow { username: row.try_get("username")?, email: row.try_get("email")? })
    }
}

pub const CONTACT_OF_ENABLED: Query<ContactRow> =
    Query::new("username_by_id", "SELECT username, email FROM users WHERE id = $1 AND NOT disabled");
