//! The proxy's own answers, independent of the connection they are written to: a status,
//! the headers that status needs, and a JSON body (error bodies in the shared shape,
//! `quantaid_protocol::wire::ErrorBody`). `service.rs` writes a reply through Pingora,
//! `direct.rs` straight to the connection; both write the same head (`head_fields`).

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use quantaid_protocol::wire::ErrorBody;

/// One answer of the proxy's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: StatusCode,
    /// Headers beyond the ones every reply carries (`head_fields`).
    pub headers: Vec<(&'static str, HeaderValue)>,
    /// A JSON body, or empty.
    pub body: Bytes,
    /// The connection is closed after this reply (the client's request was not read whole).
    pub close: bool,
}

impl Reply {
    pub fn json(status: StatusCode, body: Bytes) -> Reply {
        Reply { status, headers: Vec::new(), body, close: false }
    }

    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply::json(StatusCode::OK, body.into())
    }

    /// An error in the shared `{"error","error_description"}` shape, with the header its
    /// status calls for.
    pub fn error(status: StatusCode, code: &str, description: &str) -> Reply {
        let body = Bytes::from(ErrorBody { error: code, error_description: description }.to_json());
        let reply = Reply::json(status, body);
        match status {
            StatusCode::UNAUTHORIZED => reply.with_header("www-authenticate", HeaderValue::from_static("Bearer realm=\"quantaid\"")),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                reply.with_header("retry-after", HeaderValue::from_static("1"))
            }
            _ => reply,
        }
    }

    /// The backend (or Redis, where it must answer) cannot say: overload, not denial
    /// (docs/design.md, invariant 7).
    pub fn unavailable() -> Reply {
        Reply::error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the identity backend is not answering; retry shortly")
    }

    pub fn body_too_slow() -> Reply {
        Reply::error(StatusCode::REQUEST_TIMEOUT, "invalid_request", "the request body was not received in time").closing()
    }

    pub fn body_too_large() -> Reply {
        Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "request body is too large").closing()
    }

    /// Sets (or replaces) one header.
    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Reply {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value));
        self
    }

    pub fn closing(mut self) -> Reply {
        self.close = true;
        self
    }

    /// Every header of the reply's head except the connection's own (`date`,
    /// `connection`), in the order they are written.
    pub fn head_fields(&self) -> impl Iterator<Item = (&'static str, HeaderValue)> + '_ {
        let content_type = (!self.body.is_empty()).then(|| ("content-type", HeaderValue::from_static("application/json")));
        let fixed = [("content-length", HeaderValue::from(self.body.len())), ("cache-control", HeaderValue::from_static("no-store"))];
        content_type.into_iter().chain(fixed).chain(self.headers.iter().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_shared_body_and_their_status_headers() {
        let reply = Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "no");
        assert_eq!(&reply.body[..], br#"{"error":"unauthorized","error_description":"no"}"#);
        let fields: Vec<_> = reply.head_fields().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect();
        assert_eq!(
            fields,
            [
                "content-type: application/json",
                "content-length: 49",
                "cache-control: no-store",
                "www-authenticate: Bearer realm=\"quantaid\""
            ]
        );
        assert_eq!(Reply::unavailable().headers, [("retry-after", HeaderValue::from_static("1"))]);
        assert!(Reply::body_too_slow().close && !Reply::ok("{}").close);
        // An empty body has no content type.
        assert_eq!(Reply::json(StatusCode::OK, Bytes::new()).head_fields().next().unwrap().0, "content-length");
    }
}
