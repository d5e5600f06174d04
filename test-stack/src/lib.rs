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
//! Why a crate of its own. The harness needs the backend's library (`run`, `migrate`,
//! `config`), and the backend's tests need the harness: a dev-dependency cycle. Cargo
//! allows it, but a crate in the cycle links the backend as a second, separate instance
//! into the backend's unit-test build (the `src/` crate compiled with `--test`), whose
//! types are not the ones under test. Integration tests (`tests/`) have no such
//! problem: they link the backend's library as an ordinary external crate, the same
//! instance this crate links, so `Config` is one type across both. So:
//! - Not in `quantaid-testkit`: testkit stays free of QuantaID crates (real PostgreSQL,
//!   Redis and links only), so that the backend's unit tests and `loadtest/` can use it
//!   without that second instance, and it is not rebuilt when the backend changes.
//! - Not a `test-util` feature of the backend: that puts test code, and reqwest and
//!   testkit as optional dependencies, into the production crate, behind a feature
//!   every dependent has to remember to enable.
//! - This crate: a dev-dependency of the backend and the proxy, for their integration
//!   tests only; the backend's unit tests must not use it. The proxy's own processes
//!   and metrics stay in `proxy/tests/proxy/stack.rs`, built on [`TestApp`].

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
