//! QuantaID's caching sidecar: a Pingora proxy in front of the identity backend that
//! answers "who is this token or session?" from Redis, says "not found" from a Bloom
//! filter without a lookup, and never gives a wrong answer (docs/design.md, invariants 1–7).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod cache;
pub mod config;
mod direct;
mod endpoints;
pub mod gate;
pub mod lookup;
pub mod maintenance;
pub mod metrics;
mod respond;
pub mod routes;
pub mod service;
pub mod singleflight;
mod telemetry;

use std::sync::{Arc, LazyLock};

use anyhow::Context;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::proxy::http_proxy;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::backend::BackendClient;
use crate::cache::breaker::Breaker;
use crate::cache::redis::{LocalSettings, RedisCache};
use crate::config::Config;
use crate::gate::Gate;
use crate::lookup::Lookups;
use crate::maintenance::Maintenance;
use crate::service::QuantaProxy;

/// Each client connection's read buffer: Pingora's default is 64 KiB, sized for TLS
/// records; identity requests are a few hundred bytes, and the gate reads their heads
/// into its own buffer. Measured in docs/benchmarks.md ("Client read buffers").
const CLIENT_BUFFERS: L4BufferSettings = L4BufferSettings { read: Some(8 * 1024), write: Some(DEFAULT_L4_WRITE_BUFFER_SIZE) };

/// Builds the Pingora server: the proxy service, the maintenance service and the
/// Prometheus service. `Server::run` starts them.
pub fn build_server(config: Config) -> anyhow::Result<Server> {
    let internal_token = config
        .internal_token
        .clone()
        .context("QUANTAID_INTERNAL_TOKEN is required: the proxy uses it for the Bloom snapshot and forward-auth lookups")?;
    let config = Arc::new(config);
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(config.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.shutdown_grace.as_secs()),
        // Idle backend connections kept for reuse: enough for every client connection of a
        // burst to find one, so that load does not turn into a storm of new connects.
        upstream_keepalive_pool_size: 1024,
        ..ServerConf::default()
    };
    // Registers every metric now, so that a defect in their definitions stops the start.
    LazyLock::force(&metrics::METRICS);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let backend = BackendClient::new(config.backend_addr, config.lookup_timeout, &internal_token)?;
    let target = config.redis.target().map_err(anyhow::Error::msg)?;
    let local = LocalSettings { bytes: config.local_cache_bytes, max_ttl: config.local_cache_ttl };
    let redis = RedisCache::new(target, config.redis.timeout, Breaker::new(config.breaker_failures, config.breaker_open), local);
    let lookups = Arc::new(Lookups::new(config.clone(), redis, backend));

    // Client connections pass the gate (head limits, deadlines, connection cap) before
    // Pingora's proxy sees them.
    let service = QuantaProxy { lookups: lookups.clone(), config: config.clone() };
    let proxy = http_proxy(&server.configuration, service.clone());
    let mut proxy = Service::new("QuantaID proxy".to_string(), Gate::new(proxy, service, &config));
    proxy.add_listener(ListenerConfig::tcp(config.listen_addr.to_string()).l4_buffer(CLIENT_BUFFERS));
    let maintenance = background_service("maintenance", Maintenance { lookups, config: config.clone() });
    let mut metrics = pingora_prometheus::prometheus_http_service();
    metrics.add_tcp(&config.metrics_addr.to_string());
    server.add_service(proxy);
    server.add_service(maintenance);
    server.add_service(metrics);
    Ok(server)
}
