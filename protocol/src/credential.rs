//! Where a caller's bearer credential is read from, the same way by the backend and by
//! the proxy's own endpoints.

use http::{header, HeaderMap};

/// The cookie a browser session's token travels in.
pub const SESSION_COOKIE: &str = "quantaid_session";

/// The bearer credential: `Authorization: Bearer <token>`, else the session cookie. An
/// `Authorization` header of another scheme means "no bearer credential": the cookie is
/// not consulted behind it.
pub fn presented_credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = auth.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|t| !t.is_empty())
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
    fn credential_from_header_or_cookie() {
        assert_eq!(presented_credential(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(presented_credential(&headers(&[("authorization", "bearer  abc ")])), Some("abc"));
        assert_eq!(presented_credential(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(presented_credential(&headers(&[("authorization", "Basic abc"), ("cookie", "quantaid_session=xyz")])), None);
        assert_eq!(presented_credential(&headers(&[("authorization", "Bearer")])), None);
        assert_eq!(presented_credential(&headers(&[("cookie", "a=1; quantaid_session=xyz")])), Some("xyz"));
        assert_eq!(presented_credential(&headers(&[("cookie", "a=1"), ("cookie", "quantaid_session=xyz")])), Some("xyz"));
        assert_eq!(presented_credential(&headers(&[("cookie", "quantaid_session=")])), None);
        assert_eq!(presented_credential(&HeaderMap::new()), None);
    }
}
