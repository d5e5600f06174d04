//! How OAuth2 requests are read (RFC 6749): the form body, and the client credentials in
//! it or in HTTP Basic. The backend's token, introspection and revocation endpoints and
//! the proxy's cached introspection read them with these functions, so both sidecars
//! accept and refuse exactly the same requests.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap};

pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Whether the request's `Content-Type` is `expected` (parameters such as `charset` aside).
pub fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// Why a form body was refused; the text is the `error_description` of a 400 `invalid_request`.
#[derive(Debug, PartialEq, Eq)]
pub enum FormError {
    Malformed,
    Repeated(String),
    Nul,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormError::Malformed => f.write_str("malformed form body"),
            FormError::Repeated(name) => write!(f, "parameter {name} is repeated"),
            FormError::Nul => f.write_str("form parameters must not contain NUL characters"),
        }
    }
}

/// An `application/x-www-form-urlencoded` body as RFC 6749 reads it: parameters without
/// a value count as absent, a repeated parameter is an error (§3.1, §3.2), and a NUL
/// names nothing and must never reach SQL.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(text: &str) -> Result<Form, FormError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(text).map_err(|_| FormError::Malformed)?;
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs.into_iter().filter(|(_, v)| !v.is_empty()) {
            if k.contains('\0') || v.contains('\0') {
                return Err(FormError::Nul);
            }
            if out.iter().any(|(seen, _)| *seen == k) {
                return Err(FormError::Repeated(k));
            }
            out.push((k, v));
        }
        Ok(Form(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The client credentials a request presents.
#[derive(Debug, PartialEq, Eq)]
pub struct PresentedClient {
    pub client_id: String,
    pub secret: String,
}

/// Why no client credentials could be read from a request.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAuthError {
    /// Both HTTP Basic and `client_secret` in the body: 400 `invalid_request`.
    TwoMethods,
    /// Neither: 401 `invalid_client` with a `WWW-Authenticate` challenge.
    Missing,
    /// `client_secret` without `client_id`: 400 `invalid_request`.
    MissingClientId,
    /// Basic credentials that do not decode to `id:secret`: 401 `invalid_client`.
    Malformed,
}

impl ClientAuthError {
    /// Whether the answer is 401 `invalid_client` (with a `WWW-Authenticate` challenge);
    /// otherwise it is 400 `invalid_request`.
    pub fn is_invalid_client(&self) -> bool {
        matches!(self, ClientAuthError::Missing | ClientAuthError::Malformed)
    }

    /// The `error_description` of the answer.
    pub fn description(&self) -> &'static str {
        match self {
            ClientAuthError::TwoMethods => "use one client authentication method, not two",
            ClientAuthError::Missing => "client authentication is required",
            ClientAuthError::MissingClientId => "missing parameter client_id",
            ClientAuthError::Malformed => "malformed Basic credentials",
        }
    }
}

/// The client credentials of a request: HTTP Basic (RFC 6749 §2.3.1, with id and secret
/// form-encoded inside it) or `client_id` and `client_secret` in the body, not both.
pub fn presented_client(headers: &HeaderMap, form: &Form) -> Result<PresentedClient, ClientAuthError> {
    let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
    });
    match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => Err(ClientAuthError::TwoMethods),
        (Some(encoded), None) => {
            let decoded = STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok()).ok_or(ClientAuthError::Malformed)?;
            let (id, secret) = decoded.split_once(':').ok_or(ClientAuthError::Malformed)?;
            Ok(PresentedClient { client_id: form_decode(id), secret: form_decode(secret) })
        }
        (None, Some(secret)) => {
            let client_id = form.get("client_id").ok_or(ClientAuthError::MissingClientId)?;
            Ok(PresentedClient { client_id: client_id.to_string(), secret: secret.to_string() })
        }
        (None, None) => Err(ClientAuthError::Missing),
    }
}

fn form_decode(raw: &str) -> String {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={raw}"))
        .ok()
        .and_then(|mut v| v.pop())
        .map(|(_, v)| v)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Basic {}", STANDARD.encode(user_pass)).parse().unwrap());
        h
    }

    #[test]
    fn forms_as_rfc_6749_reads_them() {
        let form = Form::parse("a=1&b=&c=x%20y").unwrap();
        assert_eq!((form.get("a"), form.get("b"), form.get("c")), (Some("1"), None, Some("x y")));
        assert_eq!(Form::parse("a=1&a=2"), Err(FormError::Repeated("a".into())));
        assert!(Form::parse("a=&a=2").is_ok(), "an empty value is absent, so not a repeat");
        assert_eq!(Form::parse("client_id=a%00b"), Err(FormError::Nul));
        assert_eq!(Form::parse("a%00=1"), Err(FormError::Nul));
    }

    #[test]
    fn client_credentials_from_basic_or_the_body() {
        let none = Form::default();
        let id_and_secret = Form::parse("client_id=c1&client_secret=s1").unwrap();
        let expect = |id: &str, secret: &str| Ok(PresentedClient { client_id: id.into(), secret: secret.into() });
        assert_eq!(presented_client(&basic("c1:s1"), &none), expect("c1", "s1"));
        assert_eq!(presented_client(&basic("c%3A1:s%2B1"), &none), expect("c:1", "s+1"));
        assert_eq!(presented_client(&HeaderMap::new(), &id_and_secret), expect("c1", "s1"));
        assert_eq!(presented_client(&basic("c1:s1"), &id_and_secret), Err(ClientAuthError::TwoMethods));
        assert_eq!(presented_client(&HeaderMap::new(), &none), Err(ClientAuthError::Missing));
        assert_eq!(presented_client(&HeaderMap::new(), &Form::parse("client_secret=s").unwrap()), Err(ClientAuthError::MissingClientId));
        assert_eq!(presented_client(&basic("no-colon"), &none), Err(ClientAuthError::Malformed));
        let mut garbage = HeaderMap::new();
        garbage.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(presented_client(&garbage, &none), Err(ClientAuthError::Malformed));
    }
}
