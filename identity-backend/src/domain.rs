//! The domain layer: the rules of the backend, between the HTTP layer (`http/`) and
//! storage (`storage/`): who is calling, revocation and its cache invalidation,
//! throttling, password and TOTP checks, OAuth clients and token issuance, the audit
//! log and housekeeping.

pub mod audit;
pub mod auth;
pub mod housekeeping;
pub mod invalidation;
pub mod mfa;
pub mod oauth;
pub mod revocation;
pub mod security;
pub mod sessions;
pub mod throttle;
pub mod tokens;
pub mod users;
