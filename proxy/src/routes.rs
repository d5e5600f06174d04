//! Which requests the proxy answers itself, and the route template each one is
//! reported under (metric labels never carry IDs); the templates are
//! `quantaid_protocol::routes`.

use http::Method;
use quantaid_protocol::routes::{self, INTERNAL_PREFIX};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    /// `GET /v1/auth/session`, cached.
    Session,
    /// `POST /oauth/introspect`, cached.
    Introspect,
    /// `GET /v1/users/{id}`, cached; holds the raw id segment.
    User(String),
    /// `GET /v1/auth/check`, the forward-auth endpoint, cached.
    Check,
    /// `/internal/*`: for sidecars only, never forwarded from clients.
    Internal,
    /// Everything else goes to the backend as it is.
    PassThrough,
}

impl Route {
    /// Whether the proxy reads the request body to answer (introspection's form).
    pub fn reads_body(&self) -> bool {
        *self == Route::Introspect
    }
}

/// The route and its template for a request.
pub fn classify(method: &Method, path: &str) -> (Route, &'static str) {
    let internal = path.strip_prefix(INTERNAL_PREFIX).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let template = routes::template_of(path).unwrap_or("unmatched");
    let route = match (method, template) {
        _ if internal => Route::Internal,
        (&Method::GET, routes::HEALTH) => Route::Health,
        (&Method::GET, routes::READY) => Route::Ready,
        (&Method::GET, routes::SESSION) => Route::Session,
        (&Method::GET, routes::CHECK) => Route::Check,
        (&Method::POST, routes::INTROSPECT) => Route::Introspect,
        (&Method::GET, routes::USER) => Route::User(path.trim_start_matches("/v1/users/").to_string()),
        _ => Route::PassThrough,
    };
    let template = if internal { INTERNAL_PREFIX } else { template };
    (route, template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_routes_and_templates() {
        assert_eq!(classify(&Method::GET, "/v1/users/abc"), (Route::User("abc".into()), "/v1/users/{id}"));
        assert_eq!(classify(&Method::PATCH, "/v1/users/abc"), (Route::PassThrough, "/v1/users/{id}"));
        assert_eq!(classify(&Method::POST, "/v1/users/abc/password"), (Route::PassThrough, "/v1/users/{id}/password"));
        assert_eq!(classify(&Method::GET, "/v1/users"), (Route::PassThrough, "/v1/users"));
        assert_eq!(classify(&Method::GET, "/v1/users/"), (Route::PassThrough, "unmatched"));
        assert_eq!(classify(&Method::POST, "/oauth/introspect"), (Route::Introspect, "/oauth/introspect"));
        assert_eq!(classify(&Method::GET, "/v1/auth/check"), (Route::Check, "/v1/auth/check"));
        assert_eq!(classify(&Method::GET, "/internal/v1/bloom-snapshot").0, Route::Internal);
        assert_eq!(classify(&Method::GET, "/nope/123"), (Route::PassThrough, "unmatched"));
    }
}
