//! Server metadata (RFC 8414) and userinfo.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::domain::auth::Caller;
use crate::domain::oauth::SUPPORTED_GRANTS;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::Authenticated;
use crate::storage::users::CONTACT_OF_ENABLED;
use crate::SharedState;

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
    let row = conn.query_opt(&CONTACT_OF_ENABLED, &[&user_id]).await?.ok_or(ApiError::Unauthorized("invalid or expired credentials"))?;
    Ok(Json(json!({"sub": user_id, "username": row.username, "email": row.email})))
}
