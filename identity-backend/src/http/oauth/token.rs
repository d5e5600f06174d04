//! `POST /oauth/token` (RFC 6749): `client_credentials`, `password` and
//! `refresh_token`; issuance, rotation and reuse detection are in `domain/tokens.rs`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::domain::audit::{self, Action};
use crate::domain::oauth::{authenticate_client, GRANT_CLIENT_CREDENTIALS, GRANT_PASSWORD, GRANT_REFRESH_TOKEN, SUPPORTED_GRANTS};
use crate::domain::sessions::verify_password;
use crate::domain::tokens::{issue_details, issue_new, refresh, Issued};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{FormBody, RequestContext};
use crate::SharedState;

fn token_response(issued: Issued) -> Response {
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    if let Some(refresh) = issued.refresh_token {
        body["refresh_token"] = json!(refresh);
    }
    let mut response = Json(body).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /oauth/token`.
pub async fn token(State(state): State<SharedState>, ctx: RequestContext, headers: HeaderMap, form: FormBody) -> ApiResult<Response> {
    let grant_type = form.require("grant_type")?.to_string();
    let conn = state.db.conn().await?;
    let client = authenticate_client(&conn, &headers, &form.0).await?;
    if !SUPPORTED_GRANTS.contains(&grant_type.as_str()) {
        return Err(ApiError::UnsupportedGrantType(format!("grant_type {grant_type:?} is not supported")));
    }
    if !client.allows_grant(&grant_type) {
        return Err(ApiError::UnsupportedGrantType(format!("this client may not use grant_type {grant_type:?}")));
    }
    let issued = match grant_type.as_str() {
        GRANT_CLIENT_CREDENTIALS => {
            let scope = client.grant_scope(form.get("scope"))?;
            issue_new(&state, &conn, &client, None, scope, GRANT_CLIENT_CREDENTIALS, false, ctx.client_ip).await?
        }
        GRANT_PASSWORD => {
            let scope = client.grant_scope(form.get("scope"))?;
            let username = form.require("username")?.to_string();
            let password = form.require("password")?.to_string();
            drop(conn); // never hold a connection while hashing
            let user = verify_password(&state, &username, password, ctx.client_ip).await.map_err(|e| match e {
                ApiError::InvalidCredentials => ApiError::InvalidGrant("invalid resource owner credentials"),
                other => other,
            })?;
            if user.mfa_enabled {
                return Err(ApiError::InvalidGrant("this user has MFA enabled; use /v1/auth/login"));
            }
            let conn = state.db.conn().await?;
            let with_refresh = client.allows_grant(GRANT_REFRESH_TOKEN);
            issue_new(&state, &conn, &client, Some(user.id), scope, GRANT_PASSWORD, with_refresh, ctx.client_ip).await?
        }
        _ => {
            let (issued, user_id) =
                refresh(&state, &conn, &client, form.require("refresh_token")?, form.get("scope"), ctx.client_ip).await?;
            let details = issue_details(&client, &grant_type);
            audit::record(&conn, user_id, Action::TokenIssue, ctx.client_ip, details).await?;
            issued
        }
    };
    state.metrics.tokens_issued.with_label_values(&[grant_type.as_str()]).inc();
    Ok(token_response(issued))
}
