//! Sessions: checking a password (throttled, audited, the same answer whether or not the
//! user exists), and starting a session.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{self, Action};
use crate::domain::auth::note_user;
use crate::domain::security::token::{self, new_id, TokenKind};
use crate::domain::throttle::{self, LoginKeys};
use crate::error::{ApiError, ApiResult};
use crate::storage::sessions::INSERT_SESSION;
use crate::storage::users::USER_BY_USERNAME;
use crate::storage::Conn;
use crate::SharedState;

#[derive(Clone, Copy, Debug)]
pub struct VerifiedUser {
    pub id: Uuid,
    pub mfa_enabled: bool,
}

/// Checks a username and password with throttling, the same answer and a similar time
/// whether or not the user exists, and failure auditing. Used by login and by the
/// OAuth `password` grant.
pub async fn verify_password(state: &SharedState, username: &str, password: String, ip: IpAddr) -> ApiResult<VerifiedUser> {
    let username = username.trim().to_lowercase();
    let keys = LoginKeys::new(&username, ip);
    let now = Utc::now();
    let conn = state.db.conn().await?;
    let account_failures = match throttle::check(&conn, &state.config.throttle, &keys, now).await {
        Ok(counted) => counted,
        Err(e) => {
            state.metrics.logins.with_label_values(&["throttled"]).inc();
            return Err(e);
        }
    };
    let row = conn.query_opt(&USER_BY_USERNAME, &[&username]).await?;
    drop(conn); // never hold a connection while hashing
    let (user, stored_hash) = match row {
        Some(r) => (Some((r.id, r.disabled, r.mfa_enabled)), Some(r.password_hash)),
        None => (None, None),
    };
    let password_ok = state.passwords.verify(password, stored_hash).await?;
    let conn = state.db.conn().await?;
    match user {
        Some((id, disabled, mfa_enabled)) if password_ok && !disabled => {
            if account_failures {
                throttle::clear_account(&conn, &keys).await?;
            }
            note_user(id);
            Ok(VerifiedUser { id, mfa_enabled })
        }
        _ => {
            throttle::record_failure(&conn, &state.config.throttle, &keys, now).await?;
            let user_id = user.map(|u| u.0);
            audit::record(&conn, user_id, Action::LoginFailure, ip, json!({"reason": "invalid_credentials"})).await?;
            state.metrics.logins.with_label_values(&["failure"]).inc();
            Err(ApiError::InvalidCredentials)
        }
    }
}

/// Creates a session and returns its token and expiry.
pub async fn start_session(
    state: &SharedState,
    conn: &Conn<'_>,
    user_id: Uuid,
    mfa_verified: bool,
    ip: IpAddr,
) -> ApiResult<(String, DateTime<Utc>)> {
    let now = Utc::now();
    let expires_at = now + state.config.session_ttl;
    let secret = token::generate(TokenKind::Session, now);
    conn.execute(&INSERT_SESSION, &[&new_id(now), &token::digest(&secret), &user_id, &mfa_verified, &ip, &now, &expires_at]).await?;
    Ok((secret, expires_at))
}
