//! The audit log: what happened, to whom, from where. Written in the request that does
//! the thing (`storage/audit.rs` holds the table); read through `GET /v1/audit-logs`.

use std::net::IpAddr;

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::security::token::new_id;
use crate::storage::{audit, Conn, StorageResult};

/// Audited actions. The strings are the `action` column and the API filter values.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    LoginSuccess,
    LoginFailure,
    MfaSuccess,
    MfaFailure,
    MfaThrottled,
    MfaEnrolled,
    MfaRemoved,
    Reauthenticated,
    Logout,
    LogoutAll,
    TokenIssue,
    TokenRevoke,
    RefreshTokenReuse,
    UserCreate,
    UserUpdate,
    UserDelete,
    PasswordChange,
    ClientCreate,
    ClientDisable,
    ClientEnable,
    ClientDelete,
    ClientSecretRotate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::LoginSuccess => "login.success",
            Action::LoginFailure => "login.failure",
            Action::MfaSuccess => "mfa.success",
            Action::MfaFailure => "mfa.failure",
            Action::MfaThrottled => "mfa.throttled",
            Action::MfaEnrolled => "mfa.enrolled",
            Action::MfaRemoved => "mfa.removed",
            Action::Reauthenticated => "session.reauthenticated",
            Action::Logout => "logout",
            Action::LogoutAll => "logout_all",
            Action::TokenIssue => "token.issue",
            Action::TokenRevoke => "token.revoke",
            Action::RefreshTokenReuse => "token.refresh_reuse",
            Action::UserCreate => "user.create",
            Action::UserUpdate => "user.update",
            Action::UserDelete => "user.delete",
            Action::PasswordChange => "user.password_change",
            Action::ClientCreate => "client.create",
            Action::ClientDisable => "client.disable",
            Action::ClientEnable => "client.enable",
            Action::ClientDelete => "client.delete",
            Action::ClientSecretRotate => "client.secret_rotate",
        }
    }
}

/// Appends one audit entry. `details` must never hold secrets.
pub async fn record(conn: &Conn<'_>, user_id: Option<Uuid>, action: Action, ip: IpAddr, details: Value) -> StorageResult<()> {
    let now = Utc::now();
    conn.execute(&audit::INSERT, &[&new_id(now), &user_id, &action.as_str(), &ip, &details, &now]).await?;
    Ok(())
}
