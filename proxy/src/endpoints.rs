//! The endpoints the proxy answers itself, one module each; everything else is passed
//! to the backend by `service.rs`.

use pingora::proxy::Session;
use quantaid_protocol::credential::presented_credential;

mod check;
mod introspect;
mod session;
mod user;

/// The caller's bearer credential, by the rule the backend uses too.
pub(crate) fn bearer(session: &Session) -> Option<String> {
    presented_credential(&session.req_header().headers).map(str::to_string)
}
