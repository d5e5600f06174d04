//! Which requests the proxy answers itself, and the route template each one is
//! reported under (metric labels never carry IDs).

use http::Method;

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

/// Templates of the public API's routes, for metric labels of passed-through requests
/// (checked against docs/openapi.json by proxy/tests/proxy/openapi.rs).
pub const TEMPLATES: &[&str] = &[
    "/v1/users",
    "/v1/users/{id}",
    "/v1/users/{id}/password",
    "/v1/users/{id}/mfa/totp",
    "/v1/users/{id}/mfa/totp/confirm",
    "/v1/auth/login",
    "/v1/auth/mfa/verify",
    "/v1/auth/session",
    "/v1/auth/logout",
    "/v1/auth/logout-all",
    "/v1/auth/reauthenticate",
    "/v1/auth/check",
    "/v1/clients",
    "/v1/clients/{id}",
    "/v1/clients/{id}/secret",
    "/v1/userinfo",
    "/v1/audit-logs",
    "/oauth/token",
    "/oauth/introspect",
    "/oauth/revoke",
    "/.well-known/oauth-authorization-server",
    "/health",
    "/ready",
];

fn matches_template(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some("{id}"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The route and its template for a request.
pub fn classify(method: &Method, path: &str) -> (Route, &'static str) {
    let template = TEMPLATES.iter().copied().find(|t| matches_template(t, path)).unwrap_or("unmatched");
    let route = match (method, template) {
        (_, _) if path == "/internal" || path.starts_with("/internal/") => Route::Internal,
        (&Method::GET, "/health") => Route::Health,
        (&Method::GET, "/ready") => Route::Ready,
        (&Method::GET, "/v1/auth/session") => Route::Session,
        (&Method::GET, "/v1/auth/check") => Route::Check,
        (&Method::POST, "/oauth/introspect") => Route::Introspect,
        (&Method::GET, "/v1/users/{id}") => Route::User(path.trim_start_matches("/v1/users/").to_string()),
        _ => Route::PassThrough,
    };
    let template = if route == Route::Internal { "/internal" } else { template };
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
