//! The endpoints the proxy answers itself, one module each; everything else is passed
//! to the backend by `service.rs`. An endpoint sees the request as `Call` and returns a
//! `Reply`, whichever way the connection is served (`direct.rs` or Pingora).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use quantaid_protocol::credential::presented_credential;

use crate::respond::Reply;
use crate::routes::Route;
use crate::service::QuantaProxy;

mod check;
mod introspect;
mod session;
mod user;

/// A request for one of the proxy's own routes, read whole.
pub(crate) struct Call<'a> {
    pub headers: &'a HeaderMap,
    /// The request body; only introspection has one (`Route::reads_body`).
    pub body: Bytes,
    /// The `traceparent` this hop sends to the backend.
    pub traceparent: &'a HeaderValue,
}

impl Call<'_> {
    /// The caller's bearer credential, by the rule the backend uses too.
    fn bearer(&self) -> Option<&str> {
        presented_credential(self.headers)
    }
}

impl QuantaProxy {
    /// The answer to a request on one of the proxy's own routes; `None` for a request
    /// that goes to the backend as it is.
    pub(crate) async fn answer(&self, route: Route, call: Call<'_>) -> Option<Reply> {
        Some(match route {
            Route::Health => Reply::ok(Bytes::from_static(b"{\"status\":\"ok\"}")),
            // Ready means the backend answers; Redis being down is not unready.
            Route::Ready if self.lookups.backend.healthy().await => Reply::ok(Bytes::from_static(b"{\"status\":\"ready\"}")),
            Route::Ready => Reply::unavailable(),
            Route::Session => self.session_lookup(&call).await,
            Route::Check => self.check(&call).await,
            Route::User(id) => self.user(&call, &id).await,
            Route::Introspect => self.introspect(call).await,
            Route::Internal => Reply::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
            Route::PassThrough => return None,
        })
    }
}
