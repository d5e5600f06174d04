//! `GET /v1/auth/check`, the forward-auth endpoint, answered from the cache.

use http::StatusCode;
use pingora::prelude::*;
use pingora::proxy::Session;
use quantaid_protocol::token::{self, TokenKind};
use quantaid_protocol::wire::{Introspection, SessionView};

use crate::backend::Unavailable;
use crate::endpoints::bearer;
use crate::lookup::found;
use crate::respond::{respond, respond_error, unavailable};
use crate::service::{QuantaProxy, RequestCtx};

impl QuantaProxy {
    /// `GET /v1/auth/check`: 200 with identity headers, or 401 with
    /// `WWW-Authenticate`, the shape NGINX `auth_request`, Traefik ForwardAuth and Envoy
    /// `ext_authz` expect.
    pub(crate) async fn check(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let credential = bearer(session).unwrap_or_default();
        let trace = Some(&ctx.traceparent);
        // (user id, client id, scopes) of the credential; `None` if it is not valid.
        let identity: std::result::Result<Option<[String; 3]>, Unavailable> = match token::parse(&credential).map(|t| t.kind) {
            Some(TokenKind::Session) => self.lookups.session(&credential, trace).await.and_then(|answer| {
                found::<SessionView>(answer).map(|view| view.map(|v| [v.user_id.to_string(), String::new(), String::new()]))
            }),
            Some(TokenKind::Access) => self.lookups.token(&credential, trace).await.and_then(|answer| {
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
            Ok(None) => {
                return respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired credentials").await
            }
            Err(Unavailable) => return unavailable(session, ctx).await,
        };
        let headers = [("x-quantaid-user-id", user), ("x-quantaid-client-id", client), ("x-quantaid-scopes", scopes)];
        respond(session, ctx, StatusCode::OK, &headers, None).await
    }
}
