//! `GET /v1/users/{id}`, answered from the cache once the caller may read the user.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::backend::Unavailable;
use crate::endpoints::Call;
use crate::lookup::Answer;
use crate::respond::Reply;
use crate::service::QuantaProxy;

impl QuantaProxy {
    /// `GET /v1/users/{id}`: the caller is checked from the cache first, then the user.
    pub(crate) async fn user(&self, call: &Call<'_>, raw_id: &str) -> Reply {
        let Some(credential) = call.bearer() else {
            return Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "missing bearer credentials");
        };
        let trace = Some(call.traceparent);
        let caller = match self.lookups.caller(credential, trace).await {
            Ok(Some(caller)) => caller,
            Ok(None) => return Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired credentials"),
            Err(Unavailable) => return Reply::unavailable(),
        };
        let Ok(id) = uuid::Uuid::parse_str(raw_id) else {
            return Reply::error(StatusCode::NOT_FOUND, "not_found", "no such user");
        };
        if !caller.principal().may_read_user(id) {
            return Reply::error(StatusCode::FORBIDDEN, "forbidden", "not allowed to read this user");
        }
        // The credential came from a header value, so it makes one again.
        let Ok(authorization) = HeaderValue::try_from(format!("Bearer {credential}")) else {
            return Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "invalid or expired credentials");
        };
        match self.lookups.user(id, &authorization, trace).await {
            Ok(Answer::Found(body)) => Reply::ok(Bytes::from(body.to_string())),
            Ok(Answer::NotFound) => Reply::error(StatusCode::NOT_FOUND, "not_found", "no such user"),
            Ok(Answer::Refused(status, body)) => Reply::json(status, Bytes::from(body.to_string())),
            // Only introspection checks a remembered client; a user read has none.
            Ok(Answer::CallerStale) | Err(Unavailable) => Reply::unavailable(),
        }
    }
}
