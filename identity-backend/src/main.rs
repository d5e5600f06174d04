//! `quantaid-backend [serve|migrate]`: parses config and calls the library.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use anyhow::Context;
use quantaid_backend::config::Config;
use quantaid_backend::http::listen;
use quantaid_backend::{migrate, run, telemetry};

/// Each password hash takes a 19 MiB argon2id block on whichever blocking thread runs
/// it; glibc malloc keeps every such thread's freed block in its arena (hundreds of MB
/// after a login burst), mimalloc hands it back. Measured in docs/benchmarks.md ("The
/// backend's allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let _telemetry = telemetry::init_logging(&config.log_level, "quantaid-backend", config.otlp_enabled, config.otlp_logs_enabled);
    quantaid_runtime::env::warn_deprecated();
    match std::env::args().nth(1).as_deref().unwrap_or("serve") {
        "migrate" => {
            let applied = migrate(&config).await?;
            tracing::info!(applied, "migrations complete");
            Ok(())
        }
        "serve" => {
            let api = listen(config.listen_addr).with_context(|| format!("binding {}", config.listen_addr))?;
            let metrics = listen(config.metrics_addr).with_context(|| format!("binding {}", config.metrics_addr))?;
            run(api, metrics, config, shutdown_signal()).await
        }
        other => anyhow::bail!("unknown command {other:?}; use `serve` (default) or `migrate`"),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
