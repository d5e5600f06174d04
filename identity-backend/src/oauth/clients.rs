//! OAuth client registration (admin). The secret is shown once; only its digest is kept.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::audit::{self, Action};
use crate::auth::Admin;
use crate::db::Query;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{JsonBody, RequestContext};
use crate::oauth::SUPPORTED_GRANTS;
use crate::security::token::{self, new_id, TokenKind};
use crate::users::caller_label;
use crate::SharedState;

const INSERT_CLIENT: Query = Query {
    name: "client_insert",
    sql: "INSERT INTO oauth_clients (client_id, secret_digest, name, grant_types, scopes, redirect_uris, created_at)
          VALUES ($1, $2, $3, $4, $5, $6, $7)",
};

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
    conn.execute(
        &INSERT_CLIENT,
        &[&client_id, &token::digest(&secret), &name, &body.grant_types, &body.scopes, &body.redirect_uris, &now],
    )
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
    });
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
