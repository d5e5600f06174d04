//! Integration tests of the caching proxy: real PostgreSQL, real Redis, the real
//! backend (in-process) and real proxy processes.

mod stack;

mod invariants;
mod revocation_faults;
mod lookups;
mod metrics;
mod pass_through;
mod openapi;
mod security;
mod tracing;
