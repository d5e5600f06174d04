//! The rules of the backend, between the HTTP layer (`http/`) and storage (`storage/`).

pub mod audit;
pub mod auth;
pub mod housekeeping;
pub mod invalidation;
pub mod oauth;
pub mod revocation;
pub mod security;
pub mod throttle;
