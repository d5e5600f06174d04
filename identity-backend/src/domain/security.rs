//! Credential handling: token formats and digests, argon2id passwords, TOTP.

pub mod password;
pub mod totp;

/// Token formats live in `quantaid-protocol`, shared with the proxy.
pub use quantaid_protocol::token;
