//! The JSON bodies the proxy reads from the backend and serves from its cache, as types:
//! the backend serializes them, the proxy deserializes them, so a renamed or retyped
//! field fails to compile instead of silently changing what the proxy caches.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `GET /v1/auth/session`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub mfa_verified: bool,
}

/// An RFC 7662 introspection answer (`POST /oauth/introspect`). An inactive answer has
/// only `active: false`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The user's id for a user's token, else the client's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Present exactly when the token was issued to a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

impl Introspection {
    pub fn inactive() -> Self {
        Introspection::default()
    }

    /// The user a token was issued to: `sub` of a user's token (one with a `username`);
    /// `None` for a client's own token, whose `sub` is the client.
    pub fn user_id(&self) -> Option<&str> {
        self.username.as_ref().and(self.sub.as_deref())
    }
}

/// The fields of an [`Introspection`] that decide who may see it
/// (`Introspector::may_see_token`), read without copying the rest.
#[derive(Debug, Deserialize)]
pub struct IntrospectionOwner<'a> {
    pub active: bool,
    #[serde(default, borrow)]
    pub client_id: Option<Cow<'a, str>>,
}

/// Every error answer of both sidecars: `{"error": ..., "error_description": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub error_description: &'a str,
}

impl ErrorBody<'_> {
    pub fn to_json(&self) -> String {
        // Two strings cannot fail to serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn introspection_shapes() {
        assert_eq!(serde_json::to_value(Introspection::inactive()).unwrap(), json!({"active": false}));
        let user_token = json!({"active": true, "scope": "read", "client_id": "c", "sub": "u", "exp": 2, "iat": 1,
            "token_type": "Bearer", "username": "alice"});
        let parsed: Introspection = serde_json::from_value(user_token.clone()).unwrap();
        assert_eq!(parsed.user_id(), Some("u"));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), user_token);
        let client_token: Introspection = serde_json::from_value(json!({"active": true, "client_id": "c", "sub": "c"})).unwrap();
        assert_eq!(client_token.user_id(), None);
    }

    #[test]
    fn session_round_trip() {
        let view = SessionView { user_id: Uuid::now_v7(), created_at: Utc::now(), expires_at: Utc::now(), mfa_verified: true };
        let text = serde_json::to_string(&view).unwrap();
        assert_eq!(serde_json::from_str::<SessionView>(&text).unwrap(), view);
    }
}
