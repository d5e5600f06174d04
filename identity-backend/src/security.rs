//! Credential handling: token formats and digests, argon2id passwords, TOTP.

pub mod password;
pub mod token;
pub mod totp;
