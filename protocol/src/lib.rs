//! The contract between QuantaID's identity backend and its caching proxy: how tokens
//! and IDs are formed, what the Redis keys are called, how revocations are written so
//! that no cache serves a revoked credential (DESIGN.md invariants 1–4), and the log
//! and trace format both sidecars share.

pub mod cache;
pub mod env;
pub mod redis_target;
pub mod telemetry;
pub mod token;
