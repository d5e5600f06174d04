//! The contract between QuantaID's identity backend and its caching proxy: how tokens
//! and IDs are formed, what the Redis keys are called, how revocations are written so
//! that no cache serves a revoked credential (docs/design.md, invariants 1–4), and the log
//! and trace format both sidecars share.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod cache;
pub mod credential;
pub mod env;
pub mod forwarded;
pub mod introspection;
pub mod metrics;
pub mod oauth_form;
pub mod process;
pub mod redis_target;
pub mod snapshot;
pub mod telemetry;
pub mod token;
pub mod wire;
