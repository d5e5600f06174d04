//! Users: create, read, list, update, delete, and password change.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::audit::{self, decode_cursor, encode_cursor, Action};
use crate::domain::auth::{note_user, require_recent_auth, Admin, Authenticated, Caller};
use crate::domain::revocation;
use crate::domain::security::password::check_policy;
use crate::domain::security::token::new_id;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{parse_id, JsonBody, QueryParams, RequestContext};
use crate::storage::Query;
use crate::SharedState;

pub const INSERT_USER: Query = Query {
    name: "user_insert",
    sql: "INSERT INTO users (id, username, email, password_hash, created_at, updated_at)
          VALUES ($1, $2, $3, $4, $5, $5)
          RETURNING id, username, email, disabled, mfa_enabled, created_at, updated_at",
};
pub const USER_BY_ID: Query =
    Query { name: "user_by_id", sql: "SELECT id, username, email, disabled, mfa_enabled, created_at, updated_at FROM users WHERE id = $1" };
const LIST_FIRST: Query = Query {
    name: "user_list",
    sql: "SELECT id, username, email, disabled, mfa_enabled, created_at, updated_at FROM users
          ORDER BY created_at DESC, id DESC LIMIT $1",
};
const LIST_AFTER: Query = Query {
    name: "user_list_after",
    sql: "SELECT id, username, email, disabled, mfa_enabled, created_at, updated_at FROM users
          WHERE created_at <= $1 AND (created_at < $1 OR id < $2)
          ORDER BY created_at DESC, id DESC LIMIT $3",
};
const UPDATE_USER: Query = Query {
    name: "user_update",
    sql: "UPDATE users SET email = COALESCE($2, email), disabled = COALESCE($3, disabled), updated_at = $4
          WHERE id = $1 RETURNING id, username, email, disabled, mfa_enabled, created_at, updated_at",
};
const DELETE_USER: Query = Query { name: "user_delete", sql: "DELETE FROM users WHERE id = $1" };
const PASSWORD_HASH_BY_ID: Query = Query { name: "user_password_hash", sql: "SELECT password_hash FROM users WHERE id = $1" };
const SET_PASSWORD: Query = Query { name: "user_set_password", sql: "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1" };

pub fn user_json(r: &Row) -> Value {
    json!({
        "id": r.get::<_, Uuid>(0),
        "username": r.get::<_, String>(1),
        "email": r.get::<_, String>(2),
        "disabled": r.get::<_, bool>(3),
        "mfa_enabled": r.get::<_, bool>(4),
        "created_at": r.get::<_, DateTime<Utc>>(5),
        "updated_at": r.get::<_, DateTime<Utc>>(6),
    })
}

/// Lower-cases and checks a username: 3–64 of `a-z 0-9 . _ - @`.
pub fn normalize_username(raw: &str) -> ApiResult<String> {
    let name = raw.trim().to_lowercase();
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@');
    if !(3..=64).contains(&name.len()) || !name.chars().all(allowed) {
        return Err(ApiError::InvalidRequest("username must be 3 to 64 characters of a-z, 0-9, '.', '_', '-', '@'".into()));
    }
    Ok(name)
}

/// Lower-cases and sanity-checks an email address (one `@`, a dotted domain, no spaces).
pub fn normalize_email(raw: &str) -> ApiResult<String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.contains('@') && domain.contains('.')
               && !domain.starts_with('.') && !domain.ends_with('.'));
    if !valid {
        return Err(ApiError::InvalidRequest("email is not a valid address".into()));
    }
    Ok(email)
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
    let id: Uuid = row.get(0);
    audit::record(&conn, Some(id), Action::UserCreate, ctx.client_ip, json!({"by": caller_label(&caller)})).await?;
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
    let next_cursor = (rows.len() > limit).then(|| encode_cursor(rows[limit - 1].get(5), rows[limit - 1].get(0)));
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
    let stored: String = conn.query_opt(&PASSWORD_HASH_BY_ID, &[&id]).await?.ok_or(ApiError::NotFound("no such user"))?.get(0);
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

/// Who did it, for audit details: never a credential.
pub fn caller_label(caller: &Caller) -> Value {
    match caller {
        Caller::BootstrapAdmin => json!("bootstrap_admin"),
        Caller::Session(s) => json!({"user_id": s.user_id}),
        Caller::AccessToken(t) => json!({"client_id": t.client_id, "user_id": t.user_id}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalized_and_checked() {
        assert_eq!(normalize_username("  Alice.Smith ").unwrap(), "alice.smith");
        for bad in ["ab", "has space", "émile", &"x".repeat(65), "semi;colon"] {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email("Alice@Example.COM").unwrap(), "alice@example.com");
        for bad in ["", "no-at", "@example.com", "a@b", "a@@b.com", "a b@c.com", "a@.com", "a@b.com."] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
