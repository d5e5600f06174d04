//! Users: create, read, list, update, delete, and password change.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::audit::{self, Action};
use crate::domain::auth::{note_user, require_recent_auth, Caller};
use crate::domain::revocation;
use crate::domain::security::password::check_policy;
use crate::domain::security::token::new_id;
use crate::domain::users::{caller_label, normalize_email, normalize_username};
use crate::error::{ApiError, ApiResult};
use crate::http::audit::{decode_cursor, encode_cursor};
use crate::http::extract::{parse_id, Admin, Authenticated, JsonBody, QueryParams, RequestContext};
use crate::storage::users::{
    UserRow, DELETE_USER, INSERT_USER, LIST_AFTER, LIST_FIRST, PASSWORD_HASH_BY_ID, SET_PASSWORD, UPDATE_USER, USER_BY_ID,
};
use crate::SharedState;

fn user_json(r: &UserRow) -> Value {
    json!({
        "id": r.id,
        "username": r.username,
        "email": r.email,
        "disabled": r.disabled,
        "mfa_enabled": r.mfa_enabled,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    email: String,
    password: String,
}

/// `POST /v1/users` (admin).
pub async fn create(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Admin(caller): Admin,
    JsonBody(body): JsonBody<CreateUser>,
) -> ApiResult<impl IntoResponse> {
    let username = normalize_username(&body.username)?;
    let email = normalize_email(&body.email)?;
    check_policy(&body.password)?;
    let hash = state.passwords.hash(body.password).await?;
    let now = Utc::now();
    let conn = state.db.conn().await?;
    let row = conn.query_one(&INSERT_USER, &[&new_id(now), &username, &email, &hash, &now]).await?;
    audit::record(&conn, Some(row.id), Action::UserCreate, ctx.client_ip, json!({"by": caller_label(&caller)})).await?;
    Ok((StatusCode::CREATED, Json(user_json(&row))))
}

/// `GET /v1/users/{id}`: admin, the user's own session, or a token with `users:read`.
pub async fn get(State(state): State<SharedState>, Authenticated(caller): Authenticated, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "no such user")?;
    if !caller.principal().may_read_user(id) {
        return Err(ApiError::Forbidden("not allowed to read this user"));
    }
    let conn = state.db.conn().await?;
    let row = conn.query_opt(&USER_BY_ID, &[&id]).await?.ok_or(ApiError::NotFound("no such user"))?;
    Ok(Json(user_json(&row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/users?limit=&cursor=` (admin): newest first, keyset-paginated.
pub async fn list(
    State(state): State<SharedState>,
    Admin(_): Admin,
    QueryParams(params): QueryParams<ListParams>,
) -> ApiResult<Json<Value>> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::InvalidRequest("limit must be between 1 and 500".into()));
    }
    let conn = state.db.conn().await?;
    let rows = match params.cursor.as_deref().map(decode_cursor).transpose()? {
        None => conn.query(&LIST_FIRST, &[&(limit + 1)]).await?,
        Some((at, id)) => conn.query(&LIST_AFTER, &[&at, &id, &(limit + 1)]).await?,
    };
    let limit = limit as usize;
    let next_cursor = (rows.len() > limit).then(|| encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id));
    let items: Vec<Value> = rows.iter().take(limit).map(user_json).collect();
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    email: Option<String>,
    disabled: Option<bool>,
}

/// `PATCH /v1/users/{id}`: admin; or the user's own, recently authenticated session,
/// for its email only. Disabling revokes every session and token.
pub async fn update(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateUser>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "no such user")?;
    match &caller {
        c if c.is_admin() => {}
        Caller::Session(s) if s.user_id == id && body.disabled.is_none() && body.email.is_some() => require_recent_auth(&state, s)?,
        _ => return Err(ApiError::Forbidden("admin rights are required (a user's own session may change only its email)")),
    }
    let email = body.email.as_deref().map(normalize_email).transpose()?;
    let now = Utc::now();
    let conn = state.db.conn().await?;
    let row = conn.query_opt(&UPDATE_USER, &[&id, &email, &body.disabled, &now]).await?.ok_or(ApiError::NotFound("no such user"))?;
    if body.disabled == Some(true) {
        revocation::revoke_all_for_user(&state, &conn, id, None, now).await?;
    }
    revocation::user_changed(&state, &conn, id).await?;
    let details = json!({"by": caller_label(&caller), "email_changed": email.is_some(), "disabled": body.disabled});
    audit::record(&conn, Some(id), Action::UserUpdate, ctx.client_ip, details).await?;
    Ok(Json(user_json(&row)))
}

/// `DELETE /v1/users/{id}` (admin). Sessions and tokens go with the user.
pub async fn delete(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "no such user")?;
    let conn = state.db.conn().await?;
    if conn.execute(&DELETE_USER, &[&id]).await? == 0 {
        return Err(ApiError::NotFound("no such user"));
    }
    revocation::user_deleted(&state, &conn, id, Utc::now()).await?;
    audit::record(&conn, Some(id), Action::UserDelete, ctx.client_ip, json!({"by": caller_label(&caller)})).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    current_password: Option<String>,
    new_password: String,
}

/// `POST /v1/users/{id}/password`: the user's own session (with the current password),
/// or an admin. Revokes the user's other sessions and all of the user's tokens.
pub async fn change_password(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ChangePassword>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "no such user")?;
    if !caller.is_admin_or_session_of(id) {
        return Err(ApiError::Forbidden("not allowed to change this password"));
    }
    check_policy(&body.new_password)?;
    let conn = state.db.conn().await?;
    let stored = conn.query_opt(&PASSWORD_HASH_BY_ID, &[&id]).await?.ok_or(ApiError::NotFound("no such user"))?.password_hash;
    drop(conn); // do not hold a connection across the password hashing
    if !caller.is_admin() {
        let current = body.current_password.ok_or(ApiError::InvalidRequest("current_password is required".into()))?;
        if !state.passwords.verify(current, Some(stored)).await? {
            return Err(ApiError::InvalidCredentials);
        }
    }
    let hash = state.passwords.hash(body.new_password).await?;
    let now = Utc::now();
    let keep_session = match &caller {
        Caller::Session(s) => Some(s.id),
        _ => None,
    };
    let conn = state.db.conn().await?;
    conn.execute(&SET_PASSWORD, &[&id, &hash, &now]).await?;
    revocation::revoke_all_for_user(&state, &conn, id, keep_session, now).await?;
    note_user(id);
    audit::record(&conn, Some(id), Action::PasswordChange, ctx.client_ip, json!({"by": caller_label(&caller)})).await?;
    Ok(StatusCode::NO_CONTENT)
}
