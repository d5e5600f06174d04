//! Who may do what: the authorization rules that the backend enforces and that the
//! proxy applies to answers it serves from its cache. One copy, so the two cannot drift.

use uuid::Uuid;

/// The token scope of an administrator.
pub const ADMIN_SCOPE: &str = "admin";
/// The token scope that may read any user (`GET /v1/users/{id}`).
pub const USERS_READ_SCOPE: &str = "users:read";

/// Whether a space-separated scope list holds `wanted`.
pub fn has_scope(scopes: &str, wanted: &str) -> bool {
    scopes.split(' ').any(|s| s == wanted)
}

/// A verified caller, as far as these rules need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal<'a> {
    /// The operator's bootstrap admin token.
    BootstrapAdmin,
    /// A user's session.
    Session { user_id: Uuid },
    /// An OAuth2 access token with its granted scopes.
    Token { scopes: &'a str },
}

impl Principal<'_> {
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::BootstrapAdmin => true,
            Principal::Session { .. } => false,
            Principal::Token { scopes } => has_scope(scopes, ADMIN_SCOPE),
        }
    }

    /// Admin, or the user's own session.
    pub fn is_admin_or_session_of(&self, user_id: Uuid) -> bool {
        self.is_admin() || matches!(self, Principal::Session { user_id: own } if *own == user_id)
    }

    /// `GET /v1/users/{id}`: an admin, the user's own session, or a token with
    /// [`USERS_READ_SCOPE`].
    pub fn may_read_user(&self, user_id: Uuid) -> bool {
        self.is_admin_or_session_of(user_id) || matches!(self, Principal::Token { scopes } if has_scope(scopes, USERS_READ_SCOPE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_read_a_user() {
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(Principal::BootstrapAdmin.may_read_user(alice));
        assert!(Principal::Session { user_id: alice }.may_read_user(alice));
        assert!(!Principal::Session { user_id: bob }.may_read_user(alice));
        assert!(Principal::Token { scopes: "read users:read" }.may_read_user(alice));
        assert!(Principal::Token { scopes: "admin" }.may_read_user(alice));
        assert!(!Principal::Token { scopes: "read users:readx" }.may_read_user(alice));
        assert!(!Principal::Token { scopes: "" }.may_read_user(alice));
    }

    #[test]
    fn admins() {
        assert!(Principal::BootstrapAdmin.is_admin());
        assert!(Principal::Token { scopes: "read admin" }.is_admin());
        assert!(!Principal::Token { scopes: "administrator" }.is_admin());
        assert!(!Principal::Session { user_id: Uuid::now_v7() }.is_admin());
    }
}
