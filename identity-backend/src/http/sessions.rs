//! Password login, MFA verification, session lookup and logout.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use quantaid_protocol::credential::presented_credential;
use quantaid_protocol::wire::SessionView;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{self, Action};
use crate::domain::auth::{find_session, note_user, Caller};
use crate::domain::mfa::{self, TotpAttempt, TotpRefusal, MFA_MAX_FAILURES};
use crate::domain::revocation;
use crate::domain::security::token::{self, TokenKind};
use crate::domain::sessions::{start_session, verify_password};
use crate::domain::users::caller_label;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{Authenticated, JsonBody, OptionalJsonBody, RequestContext};
use crate::http::no_store;
use crate::storage::sessions::{INSERT_MFA_CHALLENGE, MFA_CHALLENGE_ATTEMPT, MFA_CONSUME, SESSION_REAUTHENTICATED};
use crate::storage::users::USERNAME_OF;
use crate::SharedState;

fn session_response(session_token: String, user_id: Uuid, expires_at: DateTime<Utc>) -> Response {
    let body = json!({"session_token": session_token, "user_id": user_id, "expires_at": expires_at, "mfa_required": false});
    no_store(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

/// `POST /v1/auth/login`.
pub async fn login(State(state): State<SharedState>, ctx: RequestContext, JsonBody(body): JsonBody<Login>) -> ApiResult<Response> {
    let user = verify_password(&state, &body.username, body.password, ctx.client_ip).await?;
    let conn = state.db.conn().await?;
    if user.mfa_enabled {
        let now = Utc::now();
        let expires_at = now + state.config.mfa_token_ttl;
        let mfa_token = token::generate(TokenKind::MfaChallenge, now);
        conn.execute(&INSERT_MFA_CHALLENGE, &[&token::digest(&mfa_token), &user.id, &expires_at]).await?;
        state.metrics.logins.with_label_values(&["mfa_required"]).inc();
        let body = json!({"mfa_required": true, "mfa_token": mfa_token, "expires_at": expires_at});
        return Ok(no_store(Json(body)));
    }
    let (session_token, expires_at) = start_session(&state, &conn, user.id, false, ctx.client_ip).await?;
    audit::record(&conn, Some(user.id), Action::LoginSuccess, ctx.client_ip, json!({"mfa": false})).await?;
    state.metrics.logins.with_label_values(&["success"]).inc();
    tracing::info!("user logged in");
    Ok(session_response(session_token, user.id, expires_at))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaVerify {
    mfa_token: String,
    code: String,
}

/// `POST /v1/auth/mfa/verify`: trades an MFA challenge and a TOTP code for a session.
pub async fn mfa_verify(State(state): State<SharedState>, ctx: RequestContext, JsonBody(body): JsonBody<MfaVerify>) -> ApiResult<Response> {
    let failure = || ApiError::Unauthorized("invalid or expired MFA challenge or code");
    if token::parse_kind(&body.mfa_token, TokenKind::MfaChallenge).is_none() {
        state.metrics.mfa_verifications.with_label_values(&["failure"]).inc();
        return Err(failure());
    }
    let digest = token::digest(&body.mfa_token);
    let now = Utc::now();
    let conn = state.db.conn().await?;
    let Some(row) = conn.query_opt(&MFA_CHALLENGE_ATTEMPT, &[&digest, &now, &MFA_MAX_FAILURES]).await? else {
        state.metrics.mfa_verifications.with_label_values(&["failure"]).inc();
        return Err(failure());
    };
    let user_id = row.user_id;
    note_user(user_id);
    // Across challenges: a new login buys a new challenge, never new guesses.
    let attempt = match TotpAttempt::begin(&state, &conn, user_id, ctx.client_ip).await? {
        Ok(attempt) => attempt,
        Err(TotpRefusal::Throttled(e)) => return Err(e),
        Err(TotpRefusal::NotEnrolled) => return Err(failure()),
    };
    let consumed = match attempt.matching_step(&body.code) {
        Some(step) => conn.query_opt(&MFA_CONSUME, &[&digest, &step, &now]).await?.is_some(),
        None => false,
    };
    attempt.finish(&state, &conn, ctx.client_ip, consumed).await?;
    if !consumed {
        return Err(failure());
    }
    let (session_token, expires_at) = start_session(&state, &conn, user_id, true, ctx.client_ip).await?;
    audit::record(&conn, Some(user_id), Action::MfaSuccess, ctx.client_ip, json!({})).await?;
    audit::record(&conn, Some(user_id), Action::LoginSuccess, ctx.client_ip, json!({"mfa": true})).await?;
    state.metrics.logins.with_label_values(&["success"]).inc();
    Ok(session_response(session_token, user_id, expires_at))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reauthenticate {
    password: Option<String>,
    code: Option<String>,
}

/// `POST /v1/auth/reauthenticate` with `{"password"}` or `{"code"}` (TOTP): the calling
/// session proves its user is present, which sensitive changes require within the last
/// `QUANTAID_REAUTH_MAX_AGE_SECS`. Passwords are throttled like logins, codes like MFA.
pub async fn reauthenticate(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<Reauthenticate>,
) -> ApiResult<StatusCode> {
    let Caller::Session(session) = caller else {
        return Err(ApiError::Unauthorized("a session token is required"));
    };
    note_user(session.user_id);
    let method = match (body.password, body.code) {
        (Some(password), None) => {
            let conn = state.db.conn().await?;
            let row = conn.query_opt(&USERNAME_OF, &[&session.user_id]).await?;
            drop(conn); // never hold a connection while hashing
            let username = row.ok_or(ApiError::Unauthorized("invalid or expired session"))?.username;
            verify_password(&state, &username, password, ctx.client_ip).await?;
            "password"
        }
        (None, Some(code)) => {
            let conn = state.db.conn().await?;
            if !mfa::check_code(&state, &conn, session.user_id, &code, ctx.client_ip).await? {
                return Err(ApiError::Unauthorized("invalid TOTP code"));
            }
            "totp"
        }
        _ => return Err(ApiError::InvalidRequest("give exactly one of password and code".into())),
    };
    let conn = state.db.conn().await?;
    conn.execute(&SESSION_REAUTHENTICATED, &[&session.id, &Utc::now()]).await?;
    audit::record(&conn, Some(session.user_id), Action::Reauthenticated, ctx.client_ip, json!({"method": method})).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/auth/session`: the session named by the bearer token or cookie.
pub async fn current(State(state): State<SharedState>, headers: HeaderMap) -> ApiResult<Response> {
    let credential = presented_credential(&headers).ok_or(ApiError::Unauthorized("missing session token"))?;
    let conn = state.db.conn().await?;
    let session = find_session(&conn, credential, Utc::now()).await?.ok_or(ApiError::Unauthorized("invalid or expired session"))?;
    note_user(session.user_id);
    let body = SessionView {
        user_id: session.user_id,
        created_at: session.created_at,
        expires_at: session.expires_at,
        mfa_verified: session.mfa_verified,
    };
    Ok(no_store(Json(body)))
}

/// `POST /v1/auth/logout`: ends the calling session everywhere.
pub async fn logout(State(state): State<SharedState>, ctx: RequestContext, Authenticated(caller): Authenticated) -> ApiResult<StatusCode> {
    let Caller::Session(session) = caller else {
        return Err(ApiError::Unauthorized("a session token is required"));
    };
    note_user(session.user_id);
    let conn = state.db.conn().await?;
    if revocation::revoke_session(&state, &conn, session.id, Utc::now()).await? {
        audit::record(&conn, Some(session.user_id), Action::Logout, ctx.client_ip, json!({})).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutAll {
    user_id: Uuid,
}

/// `POST /v1/auth/logout-all`: every session and token of the caller's user, or, for an
/// admin, of `{"user_id"}`.
pub async fn logout_all(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
    OptionalJsonBody(body): OptionalJsonBody<LogoutAll>,
) -> ApiResult<StatusCode> {
    let user_id = match (&caller, body) {
        (Caller::Session(s), None) => s.user_id,
        (c, Some(b)) if c.is_admin_or_session_of(b.user_id) => b.user_id,
        (c, None) if c.is_admin() => return Err(ApiError::InvalidRequest("user_id is required".into())),
        _ => return Err(ApiError::Forbidden("not allowed to log this user out")),
    };
    note_user(user_id);
    let conn = state.db.conn().await?;
    let (sessions, tokens) = revocation::revoke_all_for_user(&state, &conn, user_id, None, Utc::now()).await?;
    let details = json!({"by": caller_label(&caller), "sessions": sessions, "tokens": tokens});
    audit::record(&conn, Some(user_id), Action::LogoutAll, ctx.client_ip, details).await?;
    Ok(StatusCode::NO_CONTENT)
}
