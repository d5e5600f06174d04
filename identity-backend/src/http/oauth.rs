//! OAuth 2.0 endpoints: client registration, the token endpoint, introspection,
//! revocation, metadata and userinfo.

pub mod clients;
pub mod introspect;
pub mod metadata;
pub mod revoke;
pub mod token;
