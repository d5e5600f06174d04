//! `quantaid-proxy`: parses config and runs the server until SIGTERM (graceful, with a
//! short drain) or SIGINT (fast).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use pingora::server::RunArgs;
use quantaid_proxy::config::Config;

/// Buffers cross worker threads with their requests; mimalloc frees them without the
/// arena lock contention glibc malloc has then (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let _telemetry =
        quantaid_runtime::telemetry::init_logging(&config.log_level, "quantaid-proxy", config.otlp_enabled, config.otlp_logs_enabled);
    quantaid_runtime::env::warn_deprecated();
    let server = quantaid_proxy::build_server(config)?;
    server.run(RunArgs::default());
    Ok(())
}
