//! A real identity backend on a fresh database, for the integration tests of both
//! sidecars (`identity-backend/tests/api/`, `proxy/tests/proxy/`): one migrated template
//! database per test process, the test configuration with per-test overrides, the backend
//! started in-process on port-0 listeners, the tests' admin and internal tokens, the
//! HTTP helpers that set up users, sessions and clients, metric scraping, and a stand-in
//! OTLP collector.
//!
//! ```ignore
//! let app = TestApp::with(&[(config::SESSION_TTL_SECS, "1")]).await;
//! let id = app.create_user("alice").await;
//! let session = app.login("alice", PASSWORD).await;
//! ```
//!
//! Why a crate of its own rather than a module of `quantaid-testkit` or a `test-util`
//! feature of the backend: it needs the backend's library (`run`, `migrate`, `config`),
//! and `quantaid-testkit` is a dev-dependency of the backend, so testkit depending on the
//! backend would make the backend's unit tests link two copies of it. A `test-util`
//! feature would put test code and its dependencies into the backend's own build graph
//! and needs enabling from every dependent. This crate sits above both: it depends on
//! the backend and testkit, and is a dev-dependency of the backend and the proxy. Only
//! their integration tests use it, and those link the backend's library as an ordinary
//! external crate, the same one this crate links, so its types (`Config`) are theirs.
//! Real services only (testkit's PostgreSQL and Redis); the proxy's own processes and
//! metrics stay in `proxy/tests/proxy/stack.rs`, built on [`TestApp`].

pub mod api;
mod app;
mod otlp;

pub use api::{error_of, json_of};
pub use app::{base_config, TestApp};
pub use otlp::otlp_collector;

/// The backend's bootstrap admin token in every test configuration.
pub const ADMIN_TOKEN: &str = "test-bootstrap-admin-token";
/// The token that guards the backend's `/internal/*` routes (the proxies present it).
pub const INTERNAL_TOKEN: &str = "test-internal-token";
/// The password of every user the helpers create.
pub const PASSWORD: &str = "correct horse battery";
