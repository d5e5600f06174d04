//! Prometheus metrics served on the metrics port (`:9091`).
//!
//! Labels are route templates, status codes, query names and fixed enums: never IDs,
//! usernames or tokens, and never a value the client chose (`quantaid_protocol::metrics`).

use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use quantaid_protocol::metrics::{method_label, status_label};
use quantaid_runtime::process::ProcessCollector;

use crate::storage::outbox::COUNT_OUTBOX;
use crate::storage::sessions::COUNT_ACTIVE_SESSIONS;
use crate::storage::StorageError;
use crate::SharedState;

/// 100 µs to 10 s: resolves both cached-path and pathological latencies.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub db_queries: IntCounterVec,
    pub db_query_duration: HistogramVec,
    pub db_pool_connections: IntGaugeVec,
    pub db_pool_wait_timeouts: IntCounter,
    pub tokens_issued: IntCounterVec,
    pub mfa_verifications: IntCounterVec,
    pub logins: IntCounterVec,
    pub password_hash_rejections: IntCounter,
    pub cache_invalidations: IntCounterVec,
    pub sessions_active: IntGauge,
    pub invalidations_pending: IntGauge,
}

impl Metrics {
    /// Fails only if a metric were invalid or registered twice.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> prometheus::Result<T> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter = |name: &str, help: &str, labels: &[&str]| reg(&registry, IntCounterVec::new(Opts::new(name, help), labels)?);
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            reg(&registry, HistogramVec::new(opts, labels)?)
        };
        registry.register(Box::new(ProcessCollector::new()?))?;
        let gauge = |name: &str, help: &str| reg(&registry, IntGauge::new(name, help)?);
        let metrics = Metrics {
            http_requests: counter(
                "quantaid_http_requests_total",
                "HTTP requests by method, route template and status.",
                &["method", "path", "status"],
            )?,
            http_duration: histogram(
                "quantaid_http_request_duration_seconds",
                "HTTP request latency by method and route template.",
                &["method", "path"],
            )?,
            db_queries: counter("quantaid_db_queries_total", "Database queries by query name and outcome.", &["query", "result"])?,
            db_query_duration: histogram("quantaid_db_query_duration_seconds", "Database query latency by query name.", &["query"])?,
            db_pool_connections: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("quantaid_db_pool_connections", "Database pool connections by state (idle, in_use, max)."),
                    &["state"],
                )?,
            )?,
            db_pool_wait_timeouts: reg(
                &registry,
                IntCounter::new(
                    "quantaid_db_pool_wait_timeouts_total",
                    "Requests answered 503 because no database connection was free in time.",
                )?,
            )?,
            tokens_issued: counter("quantaid_oauth_tokens_issued_total", "OAuth tokens issued by grant type.", &["grant_type"])?,
            mfa_verifications: counter(
                "quantaid_mfa_verifications_total",
                "TOTP verifications by result (success, failure).",
                &["result"],
            )?,
            logins: counter(
                "quantaid_logins_total",
                "Password logins by result (success, mfa_required, failure, throttled).",
                &["result"],
            )?,
            password_hash_rejections: reg(
                &registry,
                IntCounter::new(
                    "quantaid_password_hash_rejections_total",
                    "Password hash/verify requests refused with 503 because the hashing queue was full.",
                )?,
            )?,
            cache_invalidations: counter(
                "quantaid_cache_invalidations_total",
                "Revocation markers for the proxy cache, by result (published, deferred to the outbox).",
                &["result"],
            )?,
            sessions_active: gauge(
                "quantaid_sessions_active",
                "Sessions neither revoked nor expired, counted in PostgreSQL every 30 s (the same value on every replica).",
            )?,
            invalidations_pending: gauge(
                "quantaid_cache_invalidations_pending",
                "Revocation markers waiting in the cache_invalidations outbox for Redis, counted every 30 s.",
            )?,
            registry,
        };
        // Every series of a fixed label set exists from the start, at 0, so rates and
        // ratios over it are defined before the first event.
        for result in ["success", "mfa_required", "failure", "throttled"] {
            metrics.logins.with_label_values(&[result]);
        }
        for result in ["success", "failure"] {
            metrics.mfa_verifications.with_label_values(&[result]);
        }
        for grant in crate::domain::oauth::SUPPORTED_GRANTS {
            metrics.tokens_issued.with_label_values(&[grant]);
        }
        for result in ["published", "deferred"] {
            metrics.cache_invalidations.with_label_values(&[result]);
        }
        Ok(metrics)
    }

    /// Counts one answered request. `path` is the matched route template or
    /// `unmatched`, so every label comes from a closed set.
    pub fn record_request(&self, method: &http::Method, path: &str, status: u16, elapsed: Duration) {
        let method = method_label(method.as_str());
        self.http_requests.with_label_values(&[method, path, &status_label(status)]).inc();
        self.http_duration.with_label_values(&[method, path]).observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// How often the gauges that need a query are refreshed: often enough for a dashboard,
/// rare enough that counting a large sessions table costs nothing that matters.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(30);

/// Refreshes the gauges that are counted in PostgreSQL, for as long as the backend runs.
pub async fn sample_database_gauges(state: SharedState) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let counted = async {
            let conn = state.db.conn().await?;
            let sessions = conn.query_one(&COUNT_ACTIVE_SESSIONS, &[]).await?.count;
            let pending = conn.query_one(&COUNT_OUTBOX, &[]).await?.count;
            Ok::<_, StorageError>((sessions, pending))
        };
        match counted.await {
            Ok((sessions, pending)) => {
                state.metrics.sessions_active.set(sessions);
                state.metrics.invalidations_pending.set(pending);
            }
            Err(e) => tracing::debug!(error = %e, "database gauges not refreshed"),
        }
    }
}
