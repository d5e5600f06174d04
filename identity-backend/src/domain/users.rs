//! Rules about users: what a username and an email may be, and how a caller is named
//! in the audit log.

use serde_json::{json, Value};

use crate::domain::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// Lower-cases and checks a username: 3–64 of `a-z 0-9 . _ - @`.
pub fn normalize_username(raw: &str) -> ApiResult<String> {
    let name = raw.trim().to_lowercase();
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@');
    if !(3..=64).contains(&name.len()) || !name.chars().all(allowed) {
        return Err(ApiError::InvalidRequest("username must be 3 to 64 characters of a-z, 0-9, '.', '_', '-', '@'".into()));
    }
    Ok(name)
}

/// Lower-cases and sanity-checks an email address (one `@`, a dotted domain, no spaces).
pub fn normalize_email(raw: &str) -> ApiResult<String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.contains('@') && domain.contains('.')
               && !domain.starts_with('.') && !domain.ends_with('.'));
    if !valid {
        return Err(ApiError::InvalidRequest("email is not a valid address".into()));
    }
    Ok(email)
}

/// Who did it, for audit details: never a credential.
pub fn caller_label(caller: &Caller) -> Value {
    match caller {
        Caller::BootstrapAdmin => json!("bootstrap_admin"),
        Caller::Session(s) => json!({"user_id": s.user_id}),
        Caller::AccessToken(t) => json!({"client_id": t.client_id, "user_id": t.user_id}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalized_and_checked() {
        assert_eq!(normalize_username("  Alice.Smith ").unwrap(), "alice.smith");
        for bad in ["ab", "has space", "émile", &"x".repeat(65), "semi;colon"] {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email("Alice@Example.COM").unwrap(), "alice@example.com");
        for bad in ["", "no-at", "@example.com", "a@b", "a@@b.com", "a b@c.com", "a@.com", "a@b.com."] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
