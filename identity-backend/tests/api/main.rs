//! Integration tests of the identity backend against a real PostgreSQL.

mod audit;
mod bad_input;
mod clients;
mod concurrency;
mod connections;
mod docs;
mod failover;
mod invalidation;
mod layers;
mod metrics;
mod mfa;
mod oauth;
mod openapi;
mod ops;
mod query_plans;
mod reauth;
mod sessions;
mod users;
