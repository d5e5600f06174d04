//! OAuth 2.0 clients: who may use which grant and scope, and client authentication.

use axum::http::HeaderMap;
use quantaid_protocol::oauth_form::{presented_client, PresentedClient};

use crate::domain::security::token as tokens;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::FormBody;
use crate::storage::{Conn, Query};

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

const CLIENT_BY_ID: Query = Query {
    name: "client_by_id",
    sql: "SELECT client_id, secret_digest, grant_types, scopes FROM oauth_clients WHERE client_id = $1 AND NOT disabled",
};

/// Authenticates the calling client by HTTP Basic (RFC 6749 §2.3.1, with its
/// form-encoding of id and secret) or by `client_id`/`client_secret` in the body.
/// Using both at once is an error.
pub async fn authenticate_client(conn: &Conn<'_>, headers: &HeaderMap, form: &FormBody) -> ApiResult<Client> {
    let PresentedClient { client_id, secret } = presented_client(headers, &form.0).map_err(|e| {
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
        Some(r) if tokens::digests_match(r.get::<_, &[u8]>(1), &presented) => {
            Ok(Client { client_id: r.get(0), grant_types: r.get(2), scopes: r.get(3) })
        }
        _ => Err(ApiError::InvalidClient("client authentication failed")),
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
