//! The background service: keeps the Bloom filter current, samples Redis memory and
//! follows a Sentinel failover.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use quantaid_protocol::snapshot;
use tokio::time::Instant;

use crate::config::Config;
use crate::lookup::Lookups;
use crate::metrics::METRICS;

/// How often the maintenance task asks Sentinel where the master is.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

pub struct Maintenance {
    pub lookups: Arc<Lookups>,
    pub config: Arc<Config>,
}

impl Maintenance {
    /// A full rebuild when due (or when there is no filter), else a catch-up.
    async fn refresh_bloom(&self, next_rebuild: &mut Instant) {
        let bloom = &self.lookups.bloom;
        let since = bloom.watermark_ms().filter(|_| Instant::now() < *next_rebuild);
        let snapshot = match self.lookups.backend.bloom_snapshot(since).await {
            Ok(reply) if reply.status.is_success() => snapshot::parse(&reply.body),
            Ok(reply) => Err(anyhow::anyhow!("backend answered {}", reply.status)),
            Err(_) => Err(anyhow::anyhow!("backend unavailable")),
        };
        if snapshot.is_ok() {
            // The "Bloom filter stale" alert watches this (docs/operations/runbook.md).
            METRICS.bloom_last_refresh.set(chrono::Utc::now().timestamp());
        }
        match snapshot {
            Ok(snapshot) if since.is_some() => {
                if !bloom.catch_up(&snapshot) {
                    *next_rebuild = Instant::now(); // full: rebuild on the next round
                }
            }
            Ok(snapshot) => {
                bloom.replace(&snapshot, self.config.bloom_fp_rate);
                *next_rebuild = Instant::now() + self.config.bloom_rebuild;
                tracing::info!(keys = snapshot.keys.len(), "bloom filter rebuilt");
            }
            // The old filter (or none) stays: both are safe, neither says "absent" wrongly.
            Err(e) => tracing::warn!(error = %e, "bloom filter not refreshed"),
        }
    }
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        METRICS.redis_up.set(0);
        let mut next_rebuild = Instant::now();
        let mut next_memory_sample = Instant::now();
        let mut next_bloom = Instant::now();
        loop {
            if Instant::now() >= next_bloom {
                self.refresh_bloom(&mut next_rebuild).await;
                next_bloom = Instant::now() + self.config.bloom_catch_up.min(Duration::from_secs(5));
            }
            // Each second: a Sentinel failover is followed within about that.
            self.lookups.redis.follow_master().await;
            // The first request connects Redis on the proxy's own runtime; sampling waits
            // for that, so it does not pull the connection onto this one.
            if self.lookups.redis.is_connected() && Instant::now() >= next_memory_sample {
                METRICS.local_cache_bytes.set(i64::try_from(self.lookups.redis.local_bytes()).unwrap_or(i64::MAX));
                // Doubles as the breaker's probe when no traffic is probing it.
                if let Some(bytes) = self.lookups.redis.memory_used().await {
                    METRICS.redis_memory_used.set(bytes);
                }
                METRICS.redis_up.set(i64::from(self.lookups.redis.is_up()));
                next_memory_sample = Instant::now() + Duration::from_secs(5);
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY.min(next_bloom.saturating_duration_since(Instant::now())).max(Duration::from_millis(10))) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
