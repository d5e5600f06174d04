//! Who is calling: resolves a bearer credential to a session, an access token, or the
//! bootstrap admin.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use quantaid_protocol::access::Principal;
use quantaid_protocol::credential::presented_credential;

use crate::domain::security::token::{self, TokenKind};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::check_same_origin;
use crate::storage::{Conn, Query};
use crate::SharedState;

#[derive(Clone, Debug)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub mfa_verified: bool,
    /// When the session last presented the password or a TOTP code (at creation, or
    /// through `POST /v1/auth/reauthenticate`).
    pub authenticated_at: DateTime<Utc>,
}

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

pub const SESSION_BY_DIGEST: Query = Query {
    name: "session_by_digest",
    sql: "SELECT s.id, s.user_id, s.created_at, s.expires_at, s.mfa_verified,
                 COALESCE(s.authenticated_at, s.created_at)
          FROM sessions s JOIN users u ON u.id = s.user_id
          WHERE s.token_digest = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND NOT u.disabled",
};

pub const ACCESS_TOKEN_BY_DIGEST: Query = Query {
    name: "access_token_by_digest",
    sql: "SELECT t.client_id, t.user_id, u.username, t.scope, t.created_at, t.expires_at
          FROM oauth_tokens t LEFT JOIN users u ON u.id = t.user_id
          WHERE t.access_token = $1 AND NOT t.revoked AND t.expires_at > $2
            AND (t.user_id IS NULL OR u.disabled = false)",
};

/// The live session a session token names, if any. Malformed tokens cost no query.
pub async fn find_session(conn: &Conn<'_>, session_token: &str, now: DateTime<Utc>) -> ApiResult<Option<Session>> {
    if token::parse_kind(session_token, TokenKind::Session).is_none() {
        return Ok(None);
    }
    let row = conn.query_opt(&SESSION_BY_DIGEST, &[&token::digest(session_token), &now]).await?;
    Ok(row.map(|r| Session {
        id: r.get(0),
        user_id: r.get(1),
        created_at: r.get(2),
        expires_at: r.get(3),
        mfa_verified: r.get(4),
        authenticated_at: r.get(5),
    }))
}

/// The live access token, if any. Malformed tokens cost no query.
pub async fn find_access_token(conn: &Conn<'_>, access_token: &str, now: DateTime<Utc>) -> ApiResult<Option<AccessToken>> {
    if token::parse_kind(access_token, TokenKind::Access).is_none() {
        return Ok(None);
    }
    let row = conn.query_opt(&ACCESS_TOKEN_BY_DIGEST, &[&token::digest(access_token), &now]).await?;
    Ok(row.map(|r| AccessToken {
        client_id: r.get(0),
        user_id: r.get(1),
        username: r.get(2),
        scope: r.get(3),
        issued_at: r.get(4),
        expires_at: r.get(5),
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

/// Extracts the authenticated caller. As a request-parts extractor it runs before any
/// body extractor, so an unauthenticated request learns nothing about body validation.
pub struct Authenticated(pub Caller);

impl FromRequestParts<SharedState> for Authenticated {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> ApiResult<Self> {
        check_same_origin(&parts.method, &parts.headers, &state.config.trusted_origins)?;
        authenticate(state, &parts.headers).await.map(Authenticated)
    }
}

/// Extracts a caller with admin rights (`401` without credentials, `403` without rights).
pub struct Admin(pub Caller);

impl FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> ApiResult<Self> {
        check_same_origin(&parts.method, &parts.headers, &state.config.trusted_origins)?;
        require_admin(state, &parts.headers).await.map(Admin)
    }
}

/// Records the caller's user on the request span, so log lines carry `user_id`.
pub fn note_user(user_id: Uuid) {
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
}
