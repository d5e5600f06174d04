//! Who may introspect which token (RFC 7662 §4 asks the server to limit it): the one
//! rule that the backend's `POST /oauth/introspect` and the proxy's cached answers both
//! apply (docs/security.md, "Introspection scope").
//!
//! - A client registered with the `introspect` right (the scope name [`INTROSPECT_RIGHT`]
//!   in its `scopes`; a resource server) sees every token's full answer.
//! - Any other client sees its own tokens (`client_id` = its id); for every other token
//!   it gets `{"active": false}`, as if the token did not exist.

use std::borrow::Cow;

use crate::wire::{Introspection, IntrospectionOwner};

/// The client scope that grants introspection of every client's tokens.
pub const INTROSPECT_RIGHT: &str = "introspect";

/// Response header of the backend's `POST /oauth/introspect` naming the authenticated
/// caller and its right (`{client_id} any` or `{client_id} own`), so the proxy can
/// answer the same caller from its cache under the same rule.
pub const INTROSPECTOR_HEADER: &str = "x-quantaid-introspector";

/// The authenticated client asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspector {
    pub client_id: String,
    /// Holds [`INTROSPECT_RIGHT`]: may see any client's tokens.
    pub any_token: bool,
}

impl Introspector {
    pub fn new<'a>(client_id: &str, client_scopes: impl IntoIterator<Item = &'a str>) -> Self {
        let any_token = client_scopes.into_iter().any(|s| s == INTROSPECT_RIGHT);
        Introspector { client_id: client_id.to_string(), any_token }
    }

    /// The value of [`INTROSPECTOR_HEADER`].
    pub fn header_value(&self) -> String {
        format!("{} {}", self.client_id, if self.any_token { "any" } else { "own" })
    }

    pub fn from_header_value(value: &str) -> Option<Self> {
        let (client_id, right) = value.trim().split_once(' ')?;
        let any_token = match right {
            "any" => true,
            "own" => false,
            _ => return None,
        };
        (!client_id.is_empty()).then(|| Introspector { client_id: client_id.to_string(), any_token })
    }

    /// Whether this caller may see a token's full introspection `answer` as it is.
    pub fn may_see(&self, answer: &Introspection) -> bool {
        self.may_see_token(&IntrospectionOwner { active: answer.active, client_id: answer.client_id.as_deref().map(Cow::Borrowed) })
    }

    /// The rule itself, on the two fields of an answer it reads: the proxy reads only
    /// those from a cached answer, without building the whole [`Introspection`].
    pub fn may_see_token(&self, owner: &IntrospectionOwner<'_>) -> bool {
        owner.active && (self.any_token || owner.client_id.as_deref() == Some(self.client_id.as_str()))
    }

    /// The answer this caller may see, given a token's full introspection `answer`.
    pub fn visible(&self, answer: Introspection) -> Introspection {
        if self.may_see(&answer) {
            answer
        } else {
            Introspection::inactive()
        }
    }

    /// Whether an answer given to this caller is the full one (so it may be cached for
    /// every caller): an active answer always is; an inactive one only for a caller that
    /// may see any token.
    pub fn answer_is_complete(&self, answer: &Introspection) -> bool {
        self.any_token || answer.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_tokens_or_the_right() {
        let token = Introspection { active: true, client_id: Some("a".into()), scope: Some("read".into()), ..Default::default() };
        let owner = Introspector::new("a", ["read"]);
        let stranger = Introspector::new("b", ["read"]);
        let resource_server = Introspector::new("c", ["read", INTROSPECT_RIGHT]);
        assert_eq!(owner.visible(token.clone()), token);
        assert_eq!(stranger.visible(token.clone()), Introspection::inactive());
        assert_eq!(resource_server.visible(token.clone()), token);
        assert_eq!(resource_server.visible(Introspection::inactive()), Introspection::inactive());
        assert!(!stranger.answer_is_complete(&Introspection::inactive()));
        assert!(resource_server.answer_is_complete(&Introspection::inactive()));
    }

    #[test]
    fn header_round_trip() {
        for caller in [Introspector::new("a", []), Introspector::new("b", [INTROSPECT_RIGHT])] {
            assert_eq!(Introspector::from_header_value(&caller.header_value()), Some(caller));
        }
        for bad in ["", "a", "a all", " any"] {
            assert_eq!(Introspector::from_header_value(bad), None, "{bad:?}");
        }
    }
}
