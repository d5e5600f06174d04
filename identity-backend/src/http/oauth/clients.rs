//! OAuth client registration and lifecycle (admin): create, disable or enable, rotate
//! the secret, delete. The secret is shown once; only its digest is kept. Disabling,
//! rotating and deleting end every token of the client on every replica at once
//! (`revocation::revoke_all_for_client`), and each change is audited.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::domain::audit::{self, Action};
use crate::domain::oauth::SUPPORTED_GRANTS;
use crate::domain::revocation;
use crate::domain::security::token::{self, new_id, TokenKind};
use crate::domain::users::caller_label;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{parse_id, Admin, JsonBody, RequestContext};
use crate::storage::clients::{ClientRow, INSERT_CLIENT, SET_DISABLED, SET_SECRET};
use crate::SharedState;

fn client_json(r: &ClientRow) -> serde_json::Value {
    json!({
        "client_id": r.client_id,
        "name": r.name,
        "grant_types": r.grant_types,
        "scopes": r.scopes,
        "redirect_uris": r.redirect_uris,
        "created_at": r.created_at,
        "disabled": r.disabled,
    })
}

/// Client ids are UUIDs; anything else names no client (and never reaches SQL).
fn client_id(raw: &str) -> ApiResult<String> {
    parse_id(raw, "no such client").map(|id| id.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateClient {
    disabled: bool,
}

/// `PATCH /v1/clients/{id}` (admin) with `{"disabled": true|false}`. Disabling revokes
/// every token of the client; enabling again brings none of them back.
pub async fn update(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Admin(caller): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateClient>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = client_id(&id)?;
    let conn = state.db.conn().await?;
    let row = conn.query_opt(&SET_DISABLED, &[&id, &body.disabled]).await?.ok_or(ApiError::NotFound("no such client"))?;
    let (action, revoked) = if body.disabled {
        (Action::ClientDisable, revocation::revoke_all_for_client(&state, &conn, &id).await?)
    } else {
        (Action::ClientEnable, 0)
    };
    let details = json!({"client_id": id, "tokens_revoked": revoked, "by": caller_label(&caller)});
    audit::record(&conn, None, action, ctx.client_ip, details).await?;
    Ok(Json(client_json(&row)))
}

/// `POST /v1/clients/{id}/secret` (admin): a new secret, shown once. The old one stops
/// working at once, and so does every token issued so far.
pub async fn rotate_secret(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = client_id(&id)?;
    let secret = token::generate(TokenKind::ClientSecret, Utc::now());
    let conn = state.db.conn().await?;
    conn.query_opt(&SET_SECRET, &[&id, &token::digest(&secret)]).await?.ok_or(ApiError::NotFound("no such client"))?;
    let revoked = revocation::revoke_all_for_client(&state, &conn, &id).await?;
    let details = json!({"client_id": id, "tokens_revoked": revoked, "by": caller_label(&caller)});
    audit::record(&conn, None, Action::ClientSecretRotate, ctx.client_ip, details).await?;
    let mut response = Json(json!({"client_id": id, "client_secret": secret})).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /v1/clients/{id}` (admin): the client and every token it holds.
pub async fn delete(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = client_id(&id)?;
    let conn = state.db.conn().await?;
    if !revocation::delete_client(&state, &conn, &id).await? {
        return Err(ApiError::NotFound("no such client"));
    }
    audit::record(&conn, None, Action::ClientDelete, ctx.client_ip, json!({"client_id": id, "by": caller_label(&caller)})).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    name: String,
    grant_types: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
}

fn valid_scope(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b":._-/".contains(&b))
}

/// `POST /v1/clients` (admin).
pub async fn create(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Admin(caller): Admin,
    JsonBody(body): JsonBody<CreateClient>,
) -> ApiResult<Response> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::InvalidRequest("name must be 1 to 200 characters".into()));
    }
    if body.grant_types.is_empty() || body.grant_types.iter().any(|g| !SUPPORTED_GRANTS.contains(&g.as_str())) {
        return Err(ApiError::InvalidRequest(format!("grant_types must be a non-empty subset of {SUPPORTED_GRANTS:?}")));
    }
    if let Some(bad) = body.scopes.iter().find(|s| !valid_scope(s)) {
        return Err(ApiError::InvalidRequest(format!("invalid scope {bad:?}")));
    }
    if let Some(bad) = body.redirect_uris.iter().find(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
        return Err(ApiError::InvalidRequest(format!("redirect URI {bad:?} must be http(s)")));
    }
    let now = Utc::now();
    let client_id = new_id(now).to_string();
    let secret = token::generate(TokenKind::ClientSecret, now);
    let conn = state.db.conn().await?;
    conn.execute(&INSERT_CLIENT, &[&client_id, &token::digest(&secret), &name, &body.grant_types, &body.scopes, &body.redirect_uris, &now])
        .await?;
    let details = json!({"client_id": client_id, "by": caller_label(&caller)});
    audit::record(&conn, None, Action::ClientCreate, ctx.client_ip, details).await?;
    let body = json!({
        "client_id": client_id,
        "client_secret": secret,
        "name": name,
        "grant_types": body.grant_types,
        "scopes": body.scopes,
        "redirect_uris": body.redirect_uris,
        "created_at": now,
        "disabled": false,
    });
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
