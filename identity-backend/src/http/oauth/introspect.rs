//! Introspection (RFC 7662), revocation (RFC 7009), server metadata (RFC 8414) and
//! userinfo.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::domain::audit::{self, Action};
use crate::domain::auth::{find_access_token, Authenticated, Caller};
use crate::domain::oauth::{authenticate_client, SUPPORTED_GRANTS};
use crate::domain::revocation;
use crate::domain::security::token::{self, TokenKind};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{FormBody, RequestContext};
use crate::http::no_store;
use crate::http::oauth::token::REFRESH_BY_DIGEST;
use crate::storage::{Conn, Query};
use crate::SharedState;
use quantaid_protocol::introspection::{Introspector, INTROSPECTOR_HEADER};
use quantaid_protocol::wire::Introspection;

const TOKEN_OWNER_BY_ACCESS: Query =
    Query { name: "token_owner_by_access", sql: "SELECT id, family_id, client_id, user_id FROM oauth_tokens WHERE access_token = $1" };
const USERNAME_BY_ID: Query = Query { name: "username_by_id", sql: "SELECT username, email FROM users WHERE id = $1 AND NOT disabled" };

/// `POST /oauth/introspect` (form `token=`, optional `token_type_hint`): the caller
/// authenticates as a client, and sees what `quantaid_protocol::introspection` lets it
/// see. The response names the caller and its right (for the caching proxy).
pub async fn introspect(State(state): State<SharedState>, headers: HeaderMap, form: FormBody) -> ApiResult<Response> {
    let conn = state.db.conn().await?;
    let client = authenticate_client(&conn, &headers, &form).await?;
    let caller = Introspector::new(&client.client_id, client.scopes.iter().map(String::as_str));
    let body = caller.visible(introspection(&conn, form.require("token")?, Utc::now()).await?);
    let mut response = no_store(Json(body));
    if let Ok(value) = HeaderValue::from_str(&caller.header_value()) {
        response.headers_mut().insert(INTROSPECTOR_HEADER, value);
    }
    Ok(response)
}

/// The RFC 7662 answer for `presented`. Anything malformed, unknown, expired or revoked
/// is `{"active": false}`.
pub async fn introspection(conn: &Conn<'_>, presented: &str, now: DateTime<Utc>) -> ApiResult<Introspection> {
    match token::parse(presented).map(|t| t.kind) {
        Some(TokenKind::Access) => {
            let Some(t) = find_access_token(conn, presented, now).await? else { return Ok(Introspection::inactive()) };
            Ok(Introspection {
                active: true,
                sub: Some(t.user_id.map(|u| u.to_string()).unwrap_or_else(|| t.client_id.clone())),
                scope: Some(t.scope),
                client_id: Some(t.client_id),
                exp: Some(t.expires_at.timestamp()),
                iat: Some(t.issued_at.timestamp()),
                token_type: Some("Bearer".into()),
                username: t.username,
            })
        }
        Some(TokenKind::Refresh) => {
            let Some(row) = conn.query_opt(&REFRESH_BY_DIGEST, &[&token::digest(presented)]).await? else {
                return Ok(Introspection::inactive());
            };
            let (client_id, user_id, scope): (String, Option<Uuid>, String) = (row.get(2), row.get(3), row.get(4));
            let (expires, rotated, revoked): (Option<DateTime<Utc>>, Option<DateTime<Utc>>, bool) = (row.get(5), row.get(6), row.get(7));
            let Some(exp) = expires.filter(|e| *e > now && rotated.is_none() && !revoked) else {
                return Ok(Introspection::inactive());
            };
            let username = match user_id {
                Some(u) => match conn.query_opt(&USERNAME_BY_ID, &[&u]).await? {
                    Some(r) => Some(r.get::<_, String>(0)),
                    None => return Ok(Introspection::inactive()),
                },
                None => None,
            };
            Ok(Introspection {
                active: true,
                sub: Some(user_id.map(|u| u.to_string()).unwrap_or(client_id.clone())),
                scope: Some(scope),
                client_id: Some(client_id),
                exp: Some(exp.timestamp()),
                iat: None,
                token_type: Some("refresh_token".into()),
                username,
            })
        }
        _ => Ok(Introspection::inactive()),
    }
}

/// `POST /oauth/revoke` (RFC 7009): `200` whether or not the token was live. Revoking
/// an access token ends its issuance; revoking a refresh token ends its whole family.
pub async fn revoke(State(state): State<SharedState>, ctx: RequestContext, headers: HeaderMap, form: FormBody) -> ApiResult<Response> {
    let conn = state.db.conn().await?;
    let client = authenticate_client(&conn, &headers, &form).await?;
    let presented = form.require("token")?;
    let digest = token::digest(presented);
    let kind = token::parse(presented).map(|t| t.kind);
    let row = match kind {
        Some(TokenKind::Access) => conn.query_opt(&TOKEN_OWNER_BY_ACCESS, &[&digest]).await?,
        Some(TokenKind::Refresh) => conn.query_opt(&REFRESH_BY_DIGEST, &[&digest]).await?,
        _ => None,
    };
    if let Some(row) = row {
        let (id, family_id, owner, user_id): (Uuid, Uuid, String, Option<Uuid>) = (row.get(0), row.get(1), row.get(2), row.get(3));
        if owner != client.client_id {
            return Err(ApiError::Forbidden("the token was issued to another client"));
        }
        let revoked = if kind == Some(TokenKind::Refresh) {
            revocation::revoke_family(&state, &conn, family_id).await? > 0
        } else {
            revocation::revoke_token(&state, &conn, id).await?
        };
        if revoked {
            let details =
                json!({"client_id": owner, "token_type": if kind == Some(TokenKind::Refresh) { "refresh_token" } else { "access_token" }});
            audit::record(&conn, user_id, Action::TokenRevoke, ctx.client_ip, details).await?;
        }
    }
    Ok(no_store(Json(json!({}))))
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn metadata(State(state): State<SharedState>) -> Json<Value> {
    let issuer = &state.config.issuer;
    let auth_methods = ["client_secret_basic", "client_secret_post"];
    Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth/token"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "userinfo_endpoint": format!("{issuer}/v1/userinfo"),
        "grant_types_supported": SUPPORTED_GRANTS,
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
    }))
}

/// `GET /v1/userinfo` with a user's access token.
pub async fn userinfo(State(state): State<SharedState>, Authenticated(caller): Authenticated) -> ApiResult<Json<Value>> {
    let Caller::AccessToken(t) = caller else {
        return Err(ApiError::Unauthorized("an access token is required"));
    };
    let user_id = t.user_id.ok_or(ApiError::Forbidden("this access token does not belong to a user"))?;
    let conn = state.db.conn().await?;
    let row = conn.query_opt(&USERNAME_BY_ID, &[&user_id]).await?.ok_or(ApiError::Unauthorized("invalid or expired credentials"))?;
    Ok(Json(json!({"sub": user_id, "username": row.get::<_, String>(0), "email": row.get::<_, String>(1)})))
}
