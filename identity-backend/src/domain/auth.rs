//! Who is calling: resolves a bearer credential to a session, an access token, or the
//! bootstrap admin.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use quantaid_protocol::access::Principal;
use quantaid_protocol::credential::presented_credential;

use crate::domain::security::token::{self, TokenKind};
use crate::error::{ApiError, ApiResult};
use crate::storage::sessions::SESSION_BY_DIGEST;
use crate::storage::tokens::ACCESS_TOKEN_BY_DIGEST;
use crate::storage::{Conn, StorageResult};
use crate::SharedState;

/// A live session, as storage reads it.
pub use crate::storage::sessions::SessionRow as Session;

#[derive(Clone, Debug)]
pub struct AccessToken {
    pub client_id: String,
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    pub scope: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub enum Caller {
    /// The bootstrap admin token from configuration (first setup only).
    BootstrapAdmin,
    Session(Session),
    AccessToken(AccessToken),
}

impl Caller {
    /// The caller as the shared authorization rules (`quantaid_protocol::access`) see it.
    pub fn principal(&self) -> Principal<'_> {
        match self {
            Caller::BootstrapAdmin => Principal::BootstrapAdmin,
            Caller::Session(s) => Principal::Session { user_id: s.user_id },
            Caller::AccessToken(t) => Principal::Token { scopes: &t.scope },
        }
    }

    pub fn is_admin(&self) -> bool {
        self.principal().is_admin()
    }

    /// Admin, or the user's own session.
    pub fn is_admin_or_session_of(&self, user_id: Uuid) -> bool {
        self.principal().is_admin_or_session_of(user_id)
    }
}

/// The live session a session token names, if any. Malformed tokens cost no query.
pub async fn find_session(conn: &Conn<'_>, session_token: &str, now: DateTime<Utc>) -> StorageResult<Option<Session>> {
    if token::parse_kind(session_token, TokenKind::Session).is_none() {
        return Ok(None);
    }
    conn.query_opt(&SESSION_BY_DIGEST, &[&token::digest(session_token), &now]).await
}

/// The live access token, if any. Malformed tokens cost no query.
pub async fn find_access_token(conn: &Conn<'_>, access_token: &str, now: DateTime<Utc>) -> StorageResult<Option<AccessToken>> {
    if token::parse_kind(access_token, TokenKind::Access).is_none() {
        return Ok(None);
    }
    let row = conn.query_opt(&ACCESS_TOKEN_BY_DIGEST, &[&token::digest(access_token), &now]).await?;
    Ok(row.map(|r| AccessToken {
        client_id: r.client_id,
        user_id: r.user_id,
        username: r.username,
        scope: r.scope,
        issued_at: r.created_at,
        expires_at: r.expires_at,
    }))
}

/// Resolves the caller, or `401 unauthorized`.
pub async fn authenticate(state: &SharedState, headers: &HeaderMap) -> ApiResult<Caller> {
    let credential = presented_credential(headers).ok_or(ApiError::Unauthorized("missing bearer credentials"))?;
    let invalid = ApiError::Unauthorized("invalid or expired credentials");
    if let Some(admin_digest) = &state.admin_token_digest {
        if token::digests_match(admin_digest, &token::digest(credential)) {
            return Ok(Caller::BootstrapAdmin);
        }
    }
    let now = Utc::now();
    match token::parse(credential).map(|t| t.kind) {
        Some(TokenKind::Session) => {
            let conn = state.db.conn().await?;
            find_session(&conn, credential, now).await?.map(Caller::Session).ok_or(invalid)
        }
        Some(TokenKind::Access) => {
            let conn = state.db.conn().await?;
            find_access_token(&conn, credential, now).await?.map(Caller::AccessToken).ok_or(invalid)
        }
        _ => Err(invalid),
    }
}

/// Sensitive changes (TOTP enrolment and removal, email change) need a session that
/// presented the password or a TOTP code within the configured age, not just any live
/// session: a stolen session token alone cannot lock its owner out.
pub fn require_recent_auth(state: &SharedState, session: &Session) -> ApiResult<()> {
    let max_age = state.config.reauth_max_age;
    if session.authenticated_at + max_age >= Utc::now() {
        return Ok(());
    }
    Err(ApiError::Forbidden("re-authentication required: POST /v1/auth/reauthenticate with the password or a TOTP code, then retry"))
}

/// Resolves the caller and requires admin rights (`403` for a valid non-admin).
pub async fn require_admin(state: &SharedState, headers: &HeaderMap) -> ApiResult<Caller> {
    let caller = authenticate(state, headers).await?;
    if caller.is_admin() {
        Ok(caller)
    } else {
        Err(ApiError::Forbidden("admin rights are required"))
    }
}

/// Records the caller's user on the request span, so log lines carry `user_id`.
pub fn note_user(user_id: Uuid) {
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
}
