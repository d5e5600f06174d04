//! The contract between QuantaID's identity backend and its caching proxy: how tokens
//! and IDs are formed, what the Redis keys are called, and how revocations are written
//! so that no cache serves a revoked credential (DESIGN.md invariants 1–4).

pub mod cache;
pub mod token;
