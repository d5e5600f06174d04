//! `GET /v1/auth/session`, answered from the cache.

use bytes::Bytes;
use http::StatusCode;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::backend::Unavailable;
use crate::endpoints::bearer;
use crate::lookup::Answer;
use crate::respond::{respond, respond_error, unavailable};
use crate::service::{QuantaProxy, RequestCtx};

impl QuantaProxy {
    pub(crate) async fn session_lookup(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(credential) = bearer(session) else {
            return respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "missing session token").await;
        };
        match self.lookups.session(&credential, Some(&ctx.traceparent)).await {
            Ok(Answer::Found(body)) => respond(session, ctx, StatusCode::OK, &[], Some(Bytes::from(body.to_string()))).await,
            Ok(_) => respond_error(session, ctx, StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired session").await,
            Err(Unavailable) => unavailable(session, ctx).await,
        }
    }
}
