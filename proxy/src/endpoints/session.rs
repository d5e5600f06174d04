//! `GET /v1/auth/session`, answered from the cache.

use bytes::Bytes;
use http::StatusCode;

use crate::backend::Unavailable;
use crate::endpoints::Call;
use crate::lookup::Answer;
use crate::respond::Reply;
use crate::service::QuantaProxy;

impl QuantaProxy {
    pub(crate) async fn session_lookup(&self, call: &Call<'_>) -> Reply {
        let Some(credential) = call.bearer() else {
            return Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "missing session token");
        };
        match self.lookups.session(credential, Some(call.traceparent)).await {
            Ok(Answer::Found(body)) => Reply::ok(Bytes::from(body.to_string())),
            Ok(_) => Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired session"),
            Err(Unavailable) => Reply::unavailable(),
        }
    }
}
