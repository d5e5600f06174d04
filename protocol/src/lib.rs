//! The contract between QuantaID's identity backend and its caching proxy: how tokens
//! and IDs are formed, what the Redis keys are called, how revocations are written so
//! that no cache serves a revoked credential (docs/design.md, invariants 1–4), and the HTTP
//! rules both sidecars apply. Runtime concerns (environment, logging, tracing, process
//! metrics, Redis discovery) live in `quantaid-runtime`, so the contract pulls in no
//! exporter.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod cache;
pub mod credential;
pub mod forwarded;
pub mod introspection;
pub mod metrics;
pub mod oauth_form;
pub mod routes;
pub mod snapshot;
pub mod token;
pub mod wire;
