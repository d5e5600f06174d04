//! TOTP enrolment: a user's own session asks for a secret, then proves it with a code.

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

use crate::audit::{self, Action};
use crate::auth::{note_user, Authenticated, Caller};
use crate::db::Query;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{parse_id, JsonBody, RequestContext};
use crate::security::totp;
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
const TOTP_PENDING_SECRET: Query = Query {
    name: "totp_pending_secret",
    sql: "SELECT secret, last_used_step FROM user_totp WHERE user_id = $1 AND NOT confirmed",
};
/// Confirms enrolment and records the step used, so the confirming code cannot be
/// replayed for a login.
const TOTP_CONFIRM: Query = Query {
    name: "totp_confirm",
    sql: "WITH t AS (
              UPDATE user_totp SET confirmed = true, last_used_step = $2
              WHERE user_id = $1 AND NOT confirmed AND last_used_step < $2 RETURNING user_id)
          UPDATE users u SET mfa_enabled = true, updated_at = $3 FROM t WHERE u.id = t.user_id RETURNING u.id",
};

/// Only the user's own session may enrol or confirm that user's MFA.
fn own_session(caller: Caller, raw_id: &str) -> ApiResult<uuid::Uuid> {
    let id = parse_id(raw_id, "no such user")?;
    match caller {
        Caller::Session(s) if s.user_id == id => {
            note_user(id);
            Ok(id)
        }
        _ => Err(ApiError::Forbidden("only the user's own session may manage its MFA")),
    }
}

/// `POST /v1/users/{id}/mfa/totp`: a new (pending) TOTP secret.
pub async fn enroll(
    State(state): State<SharedState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let user_id = own_session(caller, &id)?;
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
    let user_id = own_session(caller, &id)?;
    let conn = state.db.conn().await?;
    let row = conn
        .query_opt(&TOTP_PENDING_SECRET, &[&user_id])
        .await?
        .ok_or(ApiError::Conflict("no pending TOTP enrolment; start one first"))?;
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
    Ok(StatusCode::NO_CONTENT)
}
