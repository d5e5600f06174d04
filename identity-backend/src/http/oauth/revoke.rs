//! `POST /oauth/revoke` (RFC 7009).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde_json::json;

use crate::domain::audit::{self, Action};
use crate::domain::oauth::authenticate_client;
use crate::domain::revocation;
use crate::domain::security::token::{self, TokenKind};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{FormBody, RequestContext};
use crate::http::no_store;
use crate::storage::tokens::{REFRESH_BY_DIGEST, TOKEN_OWNER_BY_ACCESS};
use crate::SharedState;

/// `POST /oauth/revoke` (RFC 7009): `200` whether or not the token was live. Revoking
/// an access token ends its issuance; revoking a refresh token ends its whole family.
pub async fn revoke(State(state): State<SharedState>, ctx: RequestContext, headers: HeaderMap, form: FormBody) -> ApiResult<Response> {
    let conn = state.db.conn().await?;
    let client = authenticate_client(&conn, &headers, &form.0).await?;
    let presented = form.require("token")?;
    let digest = token::digest(presented);
    let kind = token::parse(presented).map(|t| t.kind);
    let owner = match kind {
        Some(TokenKind::Access) => {
            conn.query_opt(&TOKEN_OWNER_BY_ACCESS, &[&digest]).await?.map(|r| (r.id, r.family_id, r.client_id, r.user_id))
        }
        Some(TokenKind::Refresh) => {
            conn.query_opt(&REFRESH_BY_DIGEST, &[&digest]).await?.map(|r| (r.id, r.family_id, r.client_id, r.user_id))
        }
        _ => None,
    };
    if let Some((id, family_id, owner, user_id)) = owner {
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
