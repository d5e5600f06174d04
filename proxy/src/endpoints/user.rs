//! `GET /v1/users/{id}`, answered from the cache once the caller may read the user.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::backend::Unavailable;
use crate::endpoints::bearer;
use crate::lookup::Answer;
use crate::respond::{respond, respond_error, unavailable};
use crate::service::{QuantaProxy, RequestCtx};

impl QuantaProxy {
    /// `GET /v1/users/{id}`: the caller is checked from the cache first, then the user.
    pub(crate) async fn user(&self, session: &mut Session, ctx: &mut RequestCtx, raw_id: &str) -> Result<bool> {
        let Some(credential) = bearer(session) else {
            return respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "missing bearer credentials").await;
        };
        let caller = match self.lookups.caller(&credential, Some(&ctx.traceparent)).await {
            Ok(Some(caller)) => caller,
            Ok(None) => {
                return respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired credentials").await
            }
            Err(Unavailable) => return unavailable(session, ctx).await,
        };
        let Ok(id) = uuid::Uuid::parse_str(raw_id) else {
            return respond_error(session, ctx, StatusCode::NOT_FOUND, "not_found", "no such user").await;
        };
        if !caller.principal().may_read_user(id) {
            return respond_error(session, ctx, StatusCode::FORBIDDEN, "forbidden", "not allowed to read this user").await;
        }
        let authorization = HeaderValue::from_str(&format!("Bearer {credential}")).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
        match self.lookups.user(id, &authorization, Some(&ctx.traceparent)).await {
            Ok(Answer::Found(body)) => respond(session, ctx, StatusCode::OK, &[], Some(Bytes::from(body.to_string()))).await,
            Ok(Answer::NotFound) => respond_error(session, ctx, StatusCode::NOT_FOUND, "not_found", "no such user").await,
            Ok(Answer::Refused(status, body)) => respond(session, ctx, status, &[], Some(Bytes::from(body.to_string()))).await,
            // Only introspection checks a remembered client; a user read has none.
            Ok(Answer::CallerStale) | Err(Unavailable) => unavailable(session, ctx).await,
        }
    }
}
