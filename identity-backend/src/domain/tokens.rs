//! Token issuance: a new token family for `client_credentials` and `password`, and
//! refresh-token rotation with reuse detection for `refresh_token`.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{self, Action};
use crate::domain::oauth::Client;
use crate::domain::revocation;
use crate::domain::security::token::{self, new_id, TokenKind};
use crate::error::{ApiError, ApiResult};
use crate::storage::tokens::{RefreshTokenRow, INSERT_TOKEN_AND_AUDIT, REFRESH_BY_DIGEST, ROTATE};
use crate::storage::Conn;
use crate::SharedState;

/// What a grant issued.
pub struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub scope: String,
    pub expires_in: i64,
}

/// Inserts a new issuance (a new token family) with its audit entry.
#[allow(clippy::too_many_arguments)]
pub async fn issue_new(
    state: &SharedState,
    conn: &Conn<'_>,
    client: &Client,
    user_id: Option<Uuid>,
    scope: String,
    grant_type: &str,
    with_refresh: bool,
    ip: std::net::IpAddr,
) -> ApiResult<Issued> {
    let now = Utc::now();
    let access = token::generate(TokenKind::Access, now);
    let refresh = with_refresh.then(|| token::generate(TokenKind::Refresh, now));
    let expires_at = now + state.config.access_token_ttl;
    let refresh_expires_at: Option<DateTime<Utc>> = refresh.as_ref().map(|_| now + state.config.refresh_token_ttl);
    let id = new_id(now); // also the family's id: a new family is named after its first issuance
    conn.execute(
        &INSERT_TOKEN_AND_AUDIT,
        &[
            &id,
            &token::digest(&access),
            &refresh.as_deref().map(token::digest),
            &client.client_id,
            &user_id,
            &scope,
            &grant_type,
            &now,
            &expires_at,
            &refresh_expires_at,
            &new_id(now),
            &Action::TokenIssue.as_str(),
            &ip,
            &issue_details(client, grant_type),
        ],
    )
    .await?;
    Ok(Issued { access_token: access, refresh_token: refresh, scope, expires_in: (expires_at - now).num_seconds() })
}

/// The audit details of an issuance (never the token itself).
pub fn issue_details(client: &Client, grant_type: &str) -> serde_json::Value {
    json!({"client_id": client.client_id, "grant_type": grant_type})
}

/// A rotated refresh token came back: one of its holders is not the legitimate client,
/// so the whole family is revoked.
async fn reuse_detected(
    state: &SharedState,
    conn: &Conn<'_>,
    family_id: Uuid,
    user_id: Option<Uuid>,
    client_id: &str,
    ip: std::net::IpAddr,
) -> ApiResult<(Issued, Option<Uuid>)> {
    let revoked = revocation::revoke_family(state, conn, family_id).await?;
    tracing::warn!(family = %family_id, revoked, "refresh token reuse detected; token family revoked");
    audit::record(conn, user_id, Action::RefreshTokenReuse, ip, json!({"client_id": client_id, "revoked": revoked})).await?;
    Err(ApiError::InvalidGrant("the refresh token is invalid, expired or revoked"))
}

/// The `refresh_token` grant: rotate on every use; a second use of a rotated token
/// revokes the whole family, since one of its holders is not the legitimate client.
pub async fn refresh(
    state: &SharedState,
    conn: &Conn<'_>,
    client: &Client,
    presented: &str,
    requested_scope: Option<&str>,
    ip: std::net::IpAddr,
) -> ApiResult<(Issued, Option<Uuid>)> {
    let invalid = ApiError::InvalidGrant("the refresh token is invalid, expired or revoked");
    if token::parse_kind(presented, TokenKind::Refresh).is_none() {
        return Err(invalid);
    }
    let now = Utc::now();
    let row = conn.query_opt(&REFRESH_BY_DIGEST, &[&token::digest(presented)]).await?.ok_or(invalid)?;
    let RefreshTokenRow {
        id,
        family_id,
        client_id: owner,
        user_id,
        scope,
        refresh_expires_at: expires_at,
        refresh_rotated_at: rotated_at,
        revoked,
    } = row;
    if owner != client.client_id {
        return Err(ApiError::InvalidGrant("the refresh token is invalid, expired or revoked"));
    }
    if rotated_at.is_some() && !revoked {
        return reuse_detected(state, conn, family_id, user_id, &owner, ip).await;
    }
    if revoked || expires_at.is_none_or(|e| e <= now) {
        return Err(ApiError::InvalidGrant("the refresh token is invalid, expired or revoked"));
    }
    // A refresh may narrow the scope, never widen it (RFC 6749 §6).
    let granted: Vec<&str> = scope.split(' ').collect();
    let scope = match requested_scope {
        None => scope.clone(),
        Some(requested) => {
            let mut wanted: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
            wanted.sort_unstable();
            wanted.dedup();
            if wanted.iter().any(|s| !granted.contains(s)) {
                return Err(ApiError::InvalidScope("a refresh cannot widen the granted scope".into()));
            }
            wanted.join(" ")
        }
    };
    let access = token::generate(TokenKind::Access, now);
    let next_refresh = token::generate(TokenKind::Refresh, now);
    let expires_at = now + state.config.access_token_ttl;
    let refresh_expires_at = now + state.config.refresh_token_ttl;
    let rotated = conn
        .query_opt(
            &ROTATE,
            &[&id, &new_id(now), &token::digest(&access), &token::digest(&next_refresh), &scope, &expires_at, &refresh_expires_at, &now],
        )
        .await?;
    if rotated.is_none() {
        // Another request rotated it first: this is a second use of the same token.
        return reuse_detected(state, conn, family_id, user_id, &owner, ip).await;
    }
    let issued = Issued { access_token: access, refresh_token: Some(next_refresh), scope, expires_in: (expires_at - now).num_seconds() };
    Ok((issued, user_id))
}
