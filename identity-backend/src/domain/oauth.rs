//! OAuth 2.0 clients: who may use which grant and scope, and client authentication.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use quantaid_protocol::oauth_form::{presented_client, Form, PresentedClient};
use quantaid_protocol::wire::Introspection;

use crate::domain::auth::find_access_token;
use crate::domain::security::token::{self as tokens, TokenKind};
use crate::error::{ApiError, ApiResult};
use crate::storage::clients::CLIENT_BY_ID;
use crate::storage::tokens::REFRESH_BY_DIGEST;
use crate::storage::users::CONTACT_OF_ENABLED;
use crate::storage::{Conn, StorageResult};

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_PASSWORD: &str = "password";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const SUPPORTED_GRANTS: [&str; 3] = [GRANT_CLIENT_CREDENTIALS, GRANT_PASSWORD, GRANT_REFRESH_TOKEN];

#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
}

impl Client {
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// The granted scope: the request's scopes if all are allowed (all of the client's
    /// when none is asked for), space-separated in a stable order.
    pub fn grant_scope(&self, requested: Option<&str>) -> ApiResult<String> {
        let Some(requested) = requested else { return Ok(self.scopes.join(" ")) };
        let mut wanted: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        if let Some(bad) = wanted.iter().find(|s| !self.scopes.iter().any(|c| c == *s)) {
            return Err(ApiError::InvalidScope(format!("scope {bad:?} is not allowed for this client")));
        }
        Ok(wanted.join(" "))
    }
}

/// Authenticates the calling client by HTTP Basic (RFC 6749 §2.3.1, with its
/// form-encoding of id and secret) or by `client_id`/`client_secret` in the body.
/// Using both at once is an error.
pub async fn authenticate_client(conn: &Conn<'_>, headers: &HeaderMap, form: &Form) -> ApiResult<Client> {
    let PresentedClient { client_id, secret } = presented_client(headers, form).map_err(|e| {
        if e.is_invalid_client() {
            ApiError::InvalidClient(e.description())
        } else {
            ApiError::InvalidRequest(e.description().into())
        }
    })?;
    // A NUL (e.g. a Basic id `a%00b`) cannot name a client, and must not reach SQL.
    if client_id.is_empty() || client_id.contains('\0') || tokens::parse_kind(&secret, tokens::TokenKind::ClientSecret).is_none() {
        return Err(ApiError::InvalidClient("client authentication failed"));
    }
    let row = conn.query_opt(&CLIENT_BY_ID, &[&client_id]).await?;
    let presented = tokens::digest(&secret);
    match row {
        Some(r) if tokens::digests_match(&r.secret_digest, &presented) => {
            Ok(Client { client_id: r.client_id, grant_types: r.grant_types, scopes: r.scopes })
        }
        _ => Err(ApiError::InvalidClient("client authentication failed")),
    }
}

/// The RFC 7662 answer for `presented`. Anything malformed, unknown, expired or revoked
/// is `{"active": false}`.
pub async fn introspection(conn: &Conn<'_>, presented: &str, now: DateTime<Utc>) -> StorageResult<Introspection> {
    match tokens::parse(presented).map(|t| t.kind) {
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
            let Some(row) = conn.query_opt(&REFRESH_BY_DIGEST, &[&tokens::digest(presented)]).await? else {
                return Ok(Introspection::inactive());
            };
            let live = row.refresh_rotated_at.is_none() && !row.revoked;
            let Some(exp) = row.refresh_expires_at.filter(|e| *e > now && live) else {
                return Ok(Introspection::inactive());
            };
            let username = match row.user_id {
                Some(u) => match conn.query_opt(&CONTACT_OF_ENABLED, &[&u]).await? {
                    Some(r) => Some(r.username),
                    None => return Ok(Introspection::inactive()),
                },
                None => None,
            };
            Ok(Introspection {
                active: true,
                sub: Some(row.user_id.map(|u| u.to_string()).unwrap_or(row.client_id.clone())),
                scope: Some(row.scope),
                client_id: Some(row.client_id),
                exp: Some(exp.timestamp()),
                iat: None,
                token_type: Some("refresh_token".into()),
                username,
            })
        }
        _ => Ok(Introspection::inactive()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_narrowed_never_widened() {
        let c = Client { client_id: "c".into(), grant_types: vec![], scopes: vec!["read".into(), "write".into()] };
        assert_eq!(c.grant_scope(None).unwrap(), "read write");
        assert_eq!(c.grant_scope(Some("write read write")).unwrap(), "read write");
        assert_eq!(c.grant_scope(Some("read")).unwrap(), "read");
        assert!(c.grant_scope(Some("admin")).is_err());
    }
}
