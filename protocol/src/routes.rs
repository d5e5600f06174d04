//! The HTTP API's path templates, each named once: the backend mounts its handlers on
//! them, and the proxy picks the routes it answers itself and labels its metrics with
//! them. docs/openapi.json lists the same public paths (checked by both sidecars' tests).

pub const HEALTH: &str = "/health";
pub const READY: &str = "/ready";
pub const USERS: &str = "/v1/users";
pub const USER: &str = "/v1/users/{id}";
pub const USER_PASSWORD: &str = "/v1/users/{id}/password";
pub const USER_TOTP: &str = "/v1/users/{id}/mfa/totp";
pub const USER_TOTP_CONFIRM: &str = "/v1/users/{id}/mfa/totp/confirm";
pub const LOGIN: &str = "/v1/auth/login";
pub const MFA_VERIFY: &str = "/v1/auth/mfa/verify";
pub const SESSION: &str = "/v1/auth/session";
pub const LOGOUT: &str = "/v1/auth/logout";
pub const LOGOUT_ALL: &str = "/v1/auth/logout-all";
pub const REAUTHENTICATE: &str = "/v1/auth/reauthenticate";
pub const CHECK: &str = "/v1/auth/check";
pub const CLIENTS: &str = "/v1/clients";
pub const CLIENT: &str = "/v1/clients/{id}";
pub const CLIENT_SECRET: &str = "/v1/clients/{id}/secret";
pub const USERINFO: &str = "/v1/userinfo";
pub const AUDIT_LOGS: &str = "/v1/audit-logs";
pub const TOKEN: &str = "/oauth/token";
pub const INTROSPECT: &str = "/oauth/introspect";
pub const REVOKE: &str = "/oauth/revoke";
pub const METADATA: &str = "/.well-known/oauth-authorization-server";

/// For the sidecars only: the proxy never forwards `/internal/*` from clients.
pub const INTERNAL_PREFIX: &str = "/internal";
pub const INTERNAL_BLOOM_SNAPSHOT: &str = "/internal/v1/bloom-snapshot";
pub const INTERNAL_INTROSPECT: &str = "/internal/v1/introspect";

/// Every public path template. `GET /v1/auth/check` is answered by the proxy alone (the
/// backend has no such route).
pub const PUBLIC: &[&str] = &[
    USERS,
    USER,
    USER_PASSWORD,
    USER_TOTP,
    USER_TOTP_CONFIRM,
    LOGIN,
    MFA_VERIFY,
    SESSION,
    LOGOUT,
    LOGOUT_ALL,
    REAUTHENTICATE,
    CHECK,
    CLIENTS,
    CLIENT,
    CLIENT_SECRET,
    USERINFO,
    AUDIT_LOGS,
    TOKEN,
    INTROSPECT,
    REVOKE,
    METADATA,
    HEALTH,
    READY,
];

/// Whether `path` fits `template` (`{id}` stands for one non-empty segment).
pub fn matches(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some("{id}"), Some(segment)) if !segment.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The public template `path` fits, if any.
pub fn template_of(path: &str) -> Option<&'static str> {
    // A template without `{id}` fits only the very same string: one comparison instead
    // of a walk over its segments (this runs for every request the proxy answers).
    PUBLIC.iter().copied().find(|t| if t.contains('{') { matches(t, path) } else { *t == path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_templates() {
        assert_eq!(template_of("/v1/users/abc"), Some(USER));
        assert_eq!(template_of("/v1/users/abc/mfa/totp"), Some(USER_TOTP));
        assert_eq!(template_of("/v1/users/"), None, "an empty id is no id");
        assert_eq!(template_of("/v1/users"), Some(USERS));
        assert_eq!(template_of("/nope"), None);
        let unique: std::collections::BTreeSet<_> = PUBLIC.iter().collect();
        assert_eq!(unique.len(), PUBLIC.len(), "a template is listed twice");
    }
}
