//! TOTP enrolment (a user's own, recently authenticated session asks for a secret, then
//! proves it with a code) and removal. Codes are checked in `domain/mfa.rs`.

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

use crate::domain::audit::{self, Action};
use crate::domain::auth::{note_user, require_recent_auth, Caller, Session};
use crate::domain::revocation;
use crate::domain::security::totp;
use crate::domain::users::caller_label;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{parse_id, Authenticated, JsonBody, RequestContext};
use crate::storage::totp::{TOTP_CONFIRM, TOTP_PENDING_SECRET, TOTP_REMOVE, TOTP_STATE, TOTP_UPSERT_PENDING};
use crate::SharedState;

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

/// `POST /v1/users/{id}/mfa/totp`: a new (pending) TOTP secret.
pub async fn enroll(State(state): State<SharedState>, Authenticated(caller): Authenticated, Path(id): Path<String>) -> ApiResult<Response> {
    let (user_id, session) = own_session(caller, &id)?;
    require_recent_auth(&state, &session)?;
    let conn = state.db.conn().await?;
    let row = conn.query_opt(&TOTP_STATE, &[&user_id]).await?.ok_or(ApiError::NotFound("no such user"))?;
    let username = row.username;
    if row.confirmed == Some(true) {
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
    let (secret, last_used) = (row.secret, row.last_used_step);
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
