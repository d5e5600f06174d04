//! Request extractors that turn every kind of bad input into a 4xx JSON error:
//! wrong content type (415), oversize body (413), bad UTF-8, malformed JSON, unknown
//! fields, bad query strings and NUL characters (400). Axum's own rejections answer in
//! plain text, so they are not used.
//!
//! Every text a client sends in a body or query string passes through here, so this is
//! the one place that refuses NUL: PostgreSQL cannot store it in `text`, and a NUL that
//! reached a query would be a 500.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use quantaid_protocol::credential::presented_credential;
use quantaid_protocol::oauth_form::{content_type_is, Form, FORM_CONTENT_TYPE};
use serde::de::DeserializeOwned;

use crate::domain::auth::{authenticate, require_admin, Caller};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

/// Per-request facts the telemetry middleware establishes.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub client_ip: IpAddr,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("request context middleware is not installed")))
    }
}

/// Reads the whole body as UTF-8, refusing more than the configured limit.
async fn read_text(body: Body, limit: usize) -> Result<String, ApiError> {
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(ApiError::PayloadTooLarge(format!("request body exceeds {limit} bytes"))),
        Err(_) => return Err(ApiError::InvalidRequest("the request body could not be read".into())),
    };
    String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::InvalidRequest("request body is not valid UTF-8".into()))
}

/// `400 invalid_request` if `text` holds a NUL character.
pub fn reject_nul(text: &str, what: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::InvalidRequest(format!("{what} must not contain NUL characters")));
    }
    Ok(())
}

/// Parses JSON into `T`, refusing a NUL anywhere in a string or key. The NUL arrives
/// as a `\u0000` escape, so it is looked for after decoding, in the parsed value.
fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    fn check(v: &serde_json::Value) -> Result<(), ApiError> {
        match v {
            serde_json::Value::String(s) => reject_nul(s, "JSON strings"),
            serde_json::Value::Array(items) => items.iter().try_for_each(check),
            serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                reject_nul(k, "JSON keys")?;
                check(v)
            }),
            _ => Ok(()),
        }
    }
    let invalid = |e: serde_json::Error| ApiError::InvalidRequest(format!("invalid JSON body: {e}"));
    let value: serde_json::Value = serde_json::from_str(text).map_err(invalid)?;
    check(&value)?;
    T::deserialize(value).map_err(invalid)
}

/// A JSON body deserialized into `T` (whose fields should `deny_unknown_fields`).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        if !content_type_is(req.headers(), "application/json") {
            return Err(ApiError::UnsupportedMediaType("Content-Type must be application/json".into()));
        }
        let text = read_text(req.into_body(), state.config.max_body_bytes).await?;
        parse_json(&text).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body is `None` (for endpoints whose body is optional).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<SharedState> for OptionalJsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        let (parts, body) = req.into_parts();
        let text = read_text(body, state.config.max_body_bytes).await?;
        if text.trim().is_empty() {
            return Ok(OptionalJsonBody(None));
        }
        if !has_type || !content_type_is(&parts.headers, "application/json") {
            return Err(ApiError::UnsupportedMediaType("Content-Type must be application/json".into()));
        }
        parse_json(&text).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// An `application/x-www-form-urlencoded` body, read by the rules both sidecars share
/// (`quantaid_protocol::oauth_form::Form`); unknown parameters are ignored (RFC 6749 §3.1, §3.2).
pub struct FormBody(pub Form);

impl FormBody {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    pub fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::InvalidRequest(format!("missing parameter {name}")))
    }
}

impl FromRequest<SharedState> for FormBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        if !content_type_is(req.headers(), FORM_CONTENT_TYPE) {
            return Err(ApiError::UnsupportedMediaType(format!("Content-Type must be {FORM_CONTENT_TYPE}")));
        }
        let text = read_text(req.into_body(), state.config.max_body_bytes).await?;
        Form::parse(&text).map(FormBody).map_err(|e| ApiError::InvalidRequest(e.to_string()))
    }
}

/// A query string deserialized into `T` (which should `deny_unknown_fields`).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let invalid = |e: serde_urlencoded::de::Error| ApiError::InvalidRequest(format!("invalid query string: {e}"));
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(invalid)?;
        pairs.iter().try_for_each(|(k, v)| reject_nul(k, "query parameters").and(reject_nul(v, "query parameters")))?;
        serde_urlencoded::from_str(query).map(QueryParams).map_err(invalid)
    }
}

/// A path segment parsed as a UUID; anything else cannot name a resource, so it is a 404.
pub fn parse_id(raw: &str, what: &'static str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(what))
}

/// Whether the credential [`presented_credential`] finds is the session cookie (the
/// browser attaches it to any site's request; a header it does not).
pub fn credential_is_cookie(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::AUTHORIZATION) && presented_credential(headers).is_some()
}

/// The cross-site request forgery defence: a state-changing request authenticated by
/// the cookie alone must come from a page of a trusted origin. `Origin`, when sent,
/// must be one of `trusted_origins` (`null` never is); without it, `Sec-Fetch-Site`,
/// when sent, must be `same-origin` or `none` (typed by the user). A request with
/// neither did not come from a current browser (they send `Origin` on every cross-origin
/// POST) and is accepted. Safe methods change nothing and are not checked. The cookie's
/// own `SameSite=Lax` attribute is the first line (docs/security.md).
pub fn check_same_origin(method: &axum::http::Method, headers: &HeaderMap, trusted_origins: &[String]) -> Result<(), ApiError> {
    if method.is_safe() || !credential_is_cookie(headers) {
        return Ok(());
    }
    let refused = || ApiError::Forbidden("cross-site request refused: a cookie-authenticated change must come from a trusted origin");
    let text = |name: &str| headers.get(name).map(|v| v.to_str().map(str::trim).unwrap_or(""));
    match (text("origin"), text("sec-fetch-site")) {
        (Some(origin), _) => {
            let origin = origin.to_ascii_lowercase();
            if trusted_origins.contains(&origin) {
                Ok(())
            } else {
                Err(refused())
            }
        }
        (None, Some(site)) if !matches!(site, "same-origin" | "none") => Err(refused()),
        _ => Ok(()),
    }
}

/// Extracts the authenticated caller. As a request-parts extractor it runs before any
/// body extractor, so an unauthenticated request learns nothing about body validation.
pub struct Authenticated(pub Caller);

impl FromRequestParts<SharedState> for Authenticated {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> ApiResult<Self> {
        check_same_origin(&parts.method, &parts.headers, &state.config.trusted_origins)?;
        authenticate(state, &parts.headers).await.map(Authenticated)
    }
}

/// Extracts a caller with admin rights (`401` without credentials, `403` without rights).
pub struct Admin(pub Caller);

impl FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> ApiResult<Self> {
        check_same_origin(&parts.method, &parts.headers, &state.config.trusted_origins)?;
        require_admin(state, &parts.headers).await.map(Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cookie_changes_need_a_trusted_origin() {
        use axum::http::Method;
        let trusted = vec!["https://id.example".to_string()];
        let cookie = ("cookie", "quantaid_session=qst_x");
        let check = |m: Method, h: &[(&str, &str)]| check_same_origin(&m, &headers(h), &trusted).is_ok();
        assert!(!check(Method::POST, &[cookie, ("origin", "https://evil.example")]));
        assert!(!check(Method::DELETE, &[cookie, ("origin", "null")]));
        assert!(!check(Method::PATCH, &[cookie, ("sec-fetch-site", "cross-site")]));
        assert!(!check(Method::POST, &[cookie, ("sec-fetch-site", "same-site")]));
        assert!(check(Method::POST, &[cookie, ("origin", "HTTPS://ID.EXAMPLE")]));
        assert!(check(Method::POST, &[cookie, ("sec-fetch-site", "same-origin")]));
        assert!(check(Method::POST, &[cookie]));
        assert!(check(Method::GET, &[cookie, ("origin", "https://evil.example")]));
        assert!(check(Method::POST, &[cookie, ("authorization", "Bearer qst_y"), ("origin", "https://evil.example")]));
        assert!(check(Method::POST, &[("origin", "https://evil.example")]));
    }
}
