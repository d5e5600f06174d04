//! Integration tests of the caching proxy: real PostgreSQL, real Redis, the real
//! backend (in-process) and real proxy processes.

mod stack;

mod direct;
mod invariants;
mod lookups;
mod metrics;
mod openapi;
mod pass_through;
mod revocation_faults;
mod security;
mod tracing;
