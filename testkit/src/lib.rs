//! Real services for QuantaID's tests: a PostgreSQL cluster and Redis servers on free
//! loopback ports, in temp dirs, that die with the test process.
//!
//! ```ignore
//! let pg = quantaid_testkit::Postgres::shared();     // one cluster per test binary
//! let db = pg.create_database().await?;               // a fresh database per test
//! let redis = quantaid_testkit::Redis::start()?;      // .kill(), .restart()
//! let link = quantaid_testkit::Link::start(redis.port())?; // .cut(), .restore()
//! ```

mod link;
mod postgres;
mod process;
mod redis;

pub use link::Link;
pub use postgres::Postgres;
pub use process::{free_port, wait_for_port, ChildGuard};
pub use redis::Redis;

/// The directory of the package whose tests are running, as `cargo test` gives it when
/// they run. A path compiled in (`env!("CARGO_MANIFEST_DIR")`) would name whichever
/// checkout built the test binary, and checkouts that share a target dir (CI's clean
/// clones) reuse each other's binaries.
pub fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR: run the tests with cargo test").into()
}
