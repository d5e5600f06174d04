//! TOTP: enrolment (a user's own, recently authenticated session asks for a secret,
//! then proves it with a code), removal, and the one way every TOTP code is checked.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use data_encoding::BASE32_NOPAD;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{self, Action};
use crate::domain::auth::{note_user, require_recent_auth, Authenticated, Caller, Session};
use crate::domain::revocation;
use crate::domain::security::totp;
use crate::domain::throttle::{self, LoginKeys};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{parse_id, JsonBody, RequestContext};
use crate::http::users::caller_label;
use crate::storage::{Conn, Query};
use crate::SharedState;

const TOTP_STATE: Query = Query {
    name: "totp_state",
    sql: "SELECT u.username, t.confirmed FROM users u LEFT JOIN user_totp t ON t.user_id = u.id WHERE u.id = $1",
};
const TOTP_UPSERT_PENDING: Query = Query {
    name: "totp_upsert_pending",
    sql: "INSERT INTO user_totp (user_id, secret, confirmed, last_used_step, created_at) VALUES ($1, $2, false, 0, $3)
          ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret, last_used_step = 0, created_at = EXCLUDED.created_at
          WHERE NOT user_totp.confirmed",
};
const TOTP_PENDING_SECRET: Query =
    Query { name: "totp_pending_secret", sql: "SELECT secret, last_used_step FROM user_totp WHERE user_id = $1 AND NOT confirmed" };
/// Confirms enrolment and records the step used, so the confirming code cannot be
/// replayed for a login.
const TOTP_CONFIRM: Query = Query {
    name: "totp_confirm",
    sql: "WITH t AS (
              UPDATE user_totp SET confirmed = true, last_used_step = $2
              WHERE user_id = $1 AND NOT confirmed AND last_used_step < $2 RETURNING user_id)
          UPDATE users u SET mfa_enabled = true, updated_at = $3 FROM t WHERE u.id = t.user_id RETURNING u.id",
};

const TOTP_SECRET: Query = Query {
    name: "totp_secret",
    sql: "SELECT t.secret, t.last_used_step FROM user_totp t JOIN users u ON u.id = t.user_id
          WHERE t.user_id = $1 AND t.confirmed AND NOT u.disabled",
};
/// Records the step of a code used outside a login, so it cannot be used again.
const TOTP_USE_STEP: Query = Query {
    name: "totp_use_step",
    sql: "UPDATE user_totp SET last_used_step = $2 WHERE user_id = $1 AND confirmed AND last_used_step < $2 RETURNING user_id",
};
const TOTP_REMOVE: Query = Query {
    name: "totp_remove",
    sql: "WITH t AS (DELETE FROM user_totp WHERE user_id = $1 RETURNING user_id)
          UPDATE users u SET mfa_enabled = false, updated_at = $2 FROM t WHERE u.id = t.user_id RETURNING u.id",
};

/// Only the user's own session may enrol or confirm that user's MFA.
fn own_session(caller: Caller, raw_id: &str) -> ApiResult<(uuid::Uuid, Session)> {
    let id = parse_id(raw_id, "no such user")?;
    match caller {
        Caller::Session(s) if s.user_id == id => {
            note_user(id);
            Ok((id, s))
        }
        _ => Err(ApiError::Forbidden("only the user's own session may manage its MFA")),
    }
}

/// A TOTP code being checked for a user: counted against the MFA throttle before the
/// code is looked at (see `throttle.rs`), then settled with [`TotpAttempt::finish`].
pub struct TotpAttempt {
    keys: LoginKeys,
    user_id: Uuid,
    pub secret: Vec<u8>,
    pub last_used_step: i64,
}

/// Why a code was not checked.
pub enum TotpRefusal {
    /// No confirmed TOTP (or the user is disabled): a plain failure.
    NotEnrolled,
    Throttled(ApiError),
}

impl TotpAttempt {
    /// Counts one attempt for `user_id` from `ip` across every challenge and
    /// re-authentication; past the budget it is refused (`429`, audited once per
    /// window, visible to the owner as `mfa.throttled`).
    pub async fn begin(state: &SharedState, conn: &Conn<'_>, user_id: Uuid, ip: IpAddr) -> ApiResult<Result<Self, TotpRefusal>> {
        let keys = LoginKeys::mfa(user_id, ip);
        let now = Utc::now();
        if let throttle::Attempt::Refused { retry_after_secs, first } =
            throttle::count_attempt(conn, &state.config.mfa_throttle, &keys, now).await?
        {
            if first {
                let details = json!({"window_secs": state.config.mfa_throttle.window.num_seconds()});
                audit::record(conn, Some(user_id), Action::MfaThrottled, ip, details).await?;
                tracing::warn!("MFA attempts throttled");
            }
            state.metrics.mfa_verifications.with_label_values(&["throttled"]).inc();
            return Ok(Err(TotpRefusal::Throttled(ApiError::TooManyAttempts { retry_after_secs })));
        }
        let Some(row) = conn.query_opt(&TOTP_SECRET, &[&user_id]).await? else {
            state.metrics.mfa_verifications.with_label_values(&["failure"]).inc();
            return Ok(Err(TotpRefusal::NotEnrolled));
        };
        Ok(Ok(TotpAttempt { keys, user_id, secret: row.get(0), last_used_step: row.get(1) }))
    }

    /// The step `code` matches now, if it is right and not a replay.
    pub fn matching_step(&self, code: &str) -> Option<i64> {
        let unix = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        totp::verify(&self.secret, code.trim(), unix, u64::try_from(self.last_used_step).unwrap_or(0)).map(|s| s as i64)
    }

    /// A wrong code is audited (`mfa.failure`); a right one clears the account's count.
    pub async fn finish(self, state: &SharedState, conn: &Conn<'_>, ip: IpAddr, ok: bool) -> ApiResult<()> {
        let result = if ok { "success" } else { "failure" };
        state.metrics.mfa_verifications.with_label_values(&[result]).inc();
        if ok {
            throttle::attempt_succeeded(conn, &self.keys).await
        } else {
            audit::record(conn, Some(self.user_id), Action::MfaFailure, ip, json!({"reason": "wrong_code"})).await
        }
    }
}

/// Checks a TOTP code outside a login (re-authentication): throttled, and its step is
/// used up like a login's. `Ok(false)` for a wrong code.
pub async fn check_code(state: &SharedState, conn: &Conn<'_>, user_id: Uuid, code: &str, ip: IpAddr) -> ApiResult<bool> {
    let attempt = match TotpAttempt::begin(state, conn, user_id, ip).await? {
        Ok(attempt) => attempt,
        Err(TotpRefusal::Throttled(e)) => return Err(e),
        Err(TotpRefusal::NotEnrolled) => return Ok(false),
    };
    let ok = match attempt.matching_step(code) {
        Some(step) => conn.query_opt(&TOTP_USE_STEP, &[&user_id, &step]).await?.is_some(),
        None => false,
    };
    attempt.finish(state, conn, ip, ok).await?;
    Ok(ok)
}

/// `POST /v1/users/{id}/mfa/totp`: a new (pending) TOTP secret.
pub async fn enroll(State(state): State<SharedState>, Authenticated(caller): Authenticated, Path(id): Path<String>) -> ApiResult<Response> {
    let (user_id, session) = own_session(caller, &id)?;
    require_recent_auth(&state, &session)?;
    let conn = state.db.conn().await?;
    let row = conn.query_opt(&TOTP_STATE, &[&user_id]).await?.ok_or(ApiError::NotFound("no such user"))?;
    let username: String = row.get(0);
    if row.get::<_, Option<bool>>(1) == Some(true) {
        return Err(ApiError::Conflict("TOTP is already enabled for this user"));
    }
    let mut secret = [0u8; totp::SECRET_LEN];
    OsRng.fill_bytes(&mut secret);
    if conn.execute(&TOTP_UPSERT_PENDING, &[&user_id, &secret.as_slice(), &Utc::now()]).await? == 0 {
        return Err(ApiError::Conflict("TOTP is already enabled for this user"));
    }
    let encoded = BASE32_NOPAD.encode(&secret);
    let uri = totp::otpauth_uri("QuantaID", &username, &encoded);
    let mut response = Json(json!({"secret": encoded, "otpauth_uri": uri})).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    code: String,
}

/// `POST /v1/users/{id}/mfa/totp/confirm`: a valid code turns MFA on.
pub async fn confirm(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Confirm>,
) -> ApiResult<StatusCode> {
    let (user_id, _) = own_session(caller, &id)?;
    let conn = state.db.conn().await?;
    let row =
        conn.query_opt(&TOTP_PENDING_SECRET, &[&user_id]).await?.ok_or(ApiError::Conflict("no pending TOTP enrolment; start one first"))?;
    let (secret, last_used): (Vec<u8>, i64) = (row.get(0), row.get(1));
    let now = Utc::now();
    let unix = u64::try_from(now.timestamp()).unwrap_or(0);
    let step = totp::verify(&secret, body.code.trim(), unix, u64::try_from(last_used).unwrap_or(0));
    let confirmed = match step {
        Some(step) => conn.query_opt(&TOTP_CONFIRM, &[&user_id, &(step as i64), &now]).await?.is_some(),
        None => false,
    };
    if !confirmed {
        state.metrics.mfa_verifications.with_label_values(&["failure"]).inc();
        return Err(ApiError::InvalidRequest("the code does not match".into()));
    }
    state.metrics.mfa_verifications.with_label_values(&["success"]).inc();
    audit::record(&conn, Some(user_id), Action::MfaEnrolled, ctx.client_ip, json!({"method": "totp"})).await?;
    revocation::user_changed(&state, &conn, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/users/{id}/mfa/totp`: the user's own, recently authenticated session,
/// or an admin (account recovery). Removes a confirmed or pending enrolment.
pub async fn remove(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let user_id = parse_id(&id, "no such user")?;
    match &caller {
        c if c.is_admin() => {}
        Caller::Session(s) if s.user_id == user_id => require_recent_auth(&state, s)?,
        _ => return Err(ApiError::Forbidden("only the user's own session or an admin may remove its MFA")),
    }
    note_user(user_id);
    let conn = state.db.conn().await?;
    if conn.query_opt(&TOTP_REMOVE, &[&user_id, &Utc::now()]).await?.is_none() {
        return Err(ApiError::NotFound("no TOTP enrolment for this user"));
    }
    revocation::user_changed(&state, &conn, user_id).await?;
    let details = json!({"method": "totp", "by": caller_label(&caller)});
    audit::record(&conn, Some(user_id), Action::MfaRemoved, ctx.client_ip, details).await?;
    Ok(StatusCode::NO_CONTENT)
}
