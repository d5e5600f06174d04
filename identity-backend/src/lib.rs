//! QuantaID identity backend: the system of record behind the caching proxy.
//!
//! Three layers, one folder each: `http/` (routes, handlers, extractors, middleware),
//! `domain/` (the rules) and `storage/` (the pool, migrations, named queries and typed
//! rows). Storage returns its own `StorageError`, mapped to an HTTP answer once, in
//! `error.rs` (docs/design.md, "Backend layout").

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
mod domain;
mod error;
pub mod http;
mod metrics;
pub mod storage;

/// Token formats and TOTP, for the integration tests.
pub use domain::security;

/// The JSON log format and trace context, shared with the proxy.
pub use quantaid_runtime::telemetry;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::domain::invalidation::Invalidator;
use crate::domain::security::password::PasswordHasher;
use crate::metrics::Metrics;
use crate::storage::Db;

pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub passwords: PasswordHasher,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of the bootstrap admin token; the token itself is not kept.
    pub admin_token_digest: Option<Vec<u8>>,
    /// SHA-256 of the sidecar-internal token.
    pub internal_token_digest: Option<Vec<u8>>,
    pub invalidator: Invalidator,
}

pub type SharedState = Arc<AppState>;

/// Applies pending migrations over a dedicated connection.
pub async fn migrate(config: &Config) -> anyhow::Result<usize> {
    let (mut client, connection) =
        storage::pg_config(&config.db).connect(tokio_postgres::NoTls).await.context("connecting to PostgreSQL")?;
    let driver = tokio::spawn(connection);
    let applied = storage::migrations::migrate(&mut client).await;
    drop(client);
    let _ = driver.await;
    applied
}

/// Runs the backend on the given listeners until `shutdown` resolves.
pub async fn run(
    api_listener: TcpListener,
    metrics_listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.db.migrate_on_start {
        migrate(&config).await?;
    }
    let metrics = Arc::new(Metrics::new().context("registering the metrics")?);
    let db = Db::connect(&config.db, metrics.clone()).await?;
    let passwords = PasswordHasher::new(
        &config.argon2,
        config.password_hash_workers,
        config.password_hash_queue,
        metrics.password_hash_rejections.clone(),
    )?;
    let admin_token_digest = config.bootstrap_admin_token.as_deref().map(domain::security::token::digest);
    let internal_token_digest = config.internal_token.as_deref().map(domain::security::token::digest);
    let redis = config.redis.target().map_err(anyhow::Error::msg)?;
    let invalidator = Invalidator::new(redis, config.redis_wait_replicas, config.redis.timeout, config.cache_max_ttl);
    let state = Arc::new(AppState { config, db, passwords, metrics, admin_token_digest, internal_token_digest, invalidator });

    let housekeeping = tokio::spawn(domain::housekeeping::run(state.clone()));
    let outbox = tokio::spawn(domain::invalidation::run_outbox(state.clone()));
    let gauges = tokio::spawn(metrics::sample_database_gauges(state.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics_server = tokio::spawn(http::serve(
        metrics_listener,
        http::metrics_router(state.clone()),
        stopped(stop_rx.clone()),
        state.config.header_read_timeout,
    ));
    tracing::info!(addr = %api_listener.local_addr()?, "identity backend listening");
    let grace = state.config.shutdown_grace;
    let api_server = http::serve(api_listener, http::api_router(state.clone()), stopped(stop_rx), state.config.header_read_timeout);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
        // Requests still running after the grace period are abandoned.
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = api_server => result?,
        () = signal => tracing::warn!("drain period ended with requests still in flight"),
    }
    housekeeping.abort();
    outbox.abort();
    gauges.abort();
    metrics_server.abort();
    Ok(())
}
