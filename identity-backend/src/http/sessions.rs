//! Password login, MFA verification, session lookup and logout.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{self, Action};
use crate::domain::auth::{find_session, note_user, Authenticated, Caller};
use crate::error::{ApiError, ApiResult};
use crate::storage::{Conn, Query};
use quantaid_protocol::credential::presented_credential;
use quantaid_protocol::wire::SessionView;

use crate::domain::revocation;
use crate::domain::security::token::{self, new_id, TokenKind};
use crate::domain::throttle::{self, LoginKeys};
use crate::http::extract::{JsonBody, OptionalJsonBody, RequestContext};
use crate::http::mfa::{TotpAttempt, TotpRefusal};
use crate::http::no_store;
use crate::http::{mfa, users};
use crate::SharedState;

pub const USER_BY_USERNAME: Query =
    Query { name: "user_by_username", sql: "SELECT id, password_hash, disabled, mfa_enabled FROM users WHERE username = $1" };
const INSERT_SESSION: Query = Query {
    name: "session_insert",
    sql: "INSERT INTO sessions (id, token_digest, user_id, mfa_verified, ip_address, created_at, expires_at)
          VALUES ($1, $2, $3, $4, $5, $6, $7)",
};
const INSERT_MFA_CHALLENGE: Query =
    Query { name: "mfa_challenge_insert", sql: "INSERT INTO mfa_challenges (token_digest, user_id, expires_at) VALUES ($1, $2, $3)" };
/// Counts one attempt on a live challenge before its code is checked, in one statement,
/// so concurrent attempts cannot all read the same count (`failures` counts attempts:
/// the one that succeeds is the last). No row: unknown, used, expired or burnt out.
const MFA_CHALLENGE_ATTEMPT: Query = Query {
    name: "mfa_challenge_attempt",
    sql: "UPDATE mfa_challenges SET failures = failures + 1
          WHERE token_digest = $1 AND used_at IS NULL AND expires_at > $2 AND failures < $3
          RETURNING user_id",
};
/// Consumes the challenge and the TOTP step together: a replayed code or a reused
/// challenge matches no row.
const MFA_CONSUME: Query = Query {
    name: "mfa_consume",
    sql: "WITH c AS (
              UPDATE mfa_challenges SET used_at = $3 WHERE token_digest = $1 AND used_at IS NULL RETURNING user_id)
          UPDATE user_totp t SET last_used_step = $2 FROM c
          WHERE t.user_id = c.user_id AND t.last_used_step < $2 RETURNING t.user_id",
};

/// Codes that may be tried on one MFA challenge before it is void.
pub const MFA_MAX_FAILURES: i32 = 5;

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
    let (user, stored_hash) = match &row {
        Some(r) => (Some((r.get::<_, Uuid>(0), r.get::<_, bool>(2), r.get::<_, bool>(3))), Some(r.get(1))),
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
async fn start_session(
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
    let user_id: Uuid = row.get(0);
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

const USERNAME_OF: Query = Query { name: "username_of", sql: "SELECT username FROM users WHERE id = $1" };
const SESSION_REAUTHENTICATED: Query =
    Query { name: "session_reauthenticated", sql: "UPDATE sessions SET authenticated_at = $2 WHERE id = $1 AND revoked_at IS NULL" };

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
            let username: String = row.ok_or(ApiError::Unauthorized("invalid or expired session"))?.get(0);
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
    let details = json!({"by": users::caller_label(&caller), "sessions": sessions, "tokens": tokens});
    audit::record(&conn, Some(user_id), Action::LogoutAll, ctx.client_ip, details).await?;
    Ok(StatusCode::NO_CONTENT)
}
