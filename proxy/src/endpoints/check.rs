//! `GET /v1/auth/check`, the forward-auth endpoint, answered from the cache.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use quantaid_protocol::token::{self, TokenKind};
use quantaid_protocol::wire::{Introspection, SessionView};

use crate::backend::Unavailable;
use crate::endpoints::Call;
use crate::lookup::found;
use crate::respond::Reply;
use crate::service::QuantaProxy;

impl QuantaProxy {
    /// `GET /v1/auth/check`: 200 with identity headers, or 401 with
    /// `WWW-Authenticate`, the shape NGINX `auth_request`, Traefik ForwardAuth and Envoy
    /// `ext_authz` expect.
    pub(crate) async fn check(&self, call: &Call<'_>) -> Reply {
        let credential = call.bearer().unwrap_or_default();
        let trace = Some(call.traceparent);
        // (user id, client id, scopes) of the credential; `None` if it is not valid.
        let identity: Result<Option<[String; 3]>, Unavailable> = match token::parse(credential).map(|t| t.kind) {
            Some(TokenKind::Session) => self.lookups.session(credential, trace).await.and_then(|answer| {
                found::<SessionView>(answer).map(|view| view.map(|v| [v.user_id.to_string(), String::new(), String::new()]))
            }),
            Some(TokenKind::Access) => self.lookups.token(credential, trace).await.and_then(|answer| {
                found::<Introspection>(answer).map(|token| {
                    token.map(|t| {
                        [t.user_id().unwrap_or_default().to_string(), t.client_id.unwrap_or_default(), t.scope.unwrap_or_default()]
                    })
                })
            }),
            _ => Ok(None),
        };
        let [user, client, scopes] = match identity {
            Ok(Some(identity)) => identity,
            Ok(None) => return Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired credentials"),
            Err(Unavailable) => return Reply::unavailable(),
        };
        let mut reply = Reply::json(StatusCode::OK, Bytes::new());
        for (name, value) in [("x-quantaid-user-id", user), ("x-quantaid-client-id", client), ("x-quantaid-scopes", scopes)] {
            // The backend's answer names these; one that is no header value cannot be passed on.
            let Ok(value) = HeaderValue::try_from(value) else { return Reply::unavailable() };
            reply = reply.with_header(name, value);
        }
        reply
    }
}
