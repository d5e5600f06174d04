//! Integration tests of the identity backend against a real PostgreSQL.

mod harness;

mod audit;
mod bad_input;
mod concurrency;
mod invalidation;
mod mfa;
mod oauth;
mod failover;
mod ops;
mod query_plans;
mod sessions;
mod users;
