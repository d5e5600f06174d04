//! Prometheus metrics served on the metrics port (`:9091`).
//!
//! Labels are route templates, status codes, query names and fixed enums: never IDs,
//! usernames or tokens.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

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
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(&registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            reg(&registry, HistogramVec::new(opts, labels).expect("valid histogram"))
        };
        Metrics {
            http_requests: counter(
                "quantaid_http_requests_total",
                "HTTP requests by method, route template and status.",
                &["method", "path", "status"],
            ),
            http_duration: histogram(
                "quantaid_http_request_duration_seconds",
                "HTTP request latency by method and route template.",
                &["method", "path"],
            ),
            db_queries: counter("quantaid_db_queries_total", "Database queries by query name and outcome.", &[
                "query", "result",
            ]),
            db_query_duration: histogram(
                "quantaid_db_query_duration_seconds",
                "Database query latency by query name.",
                &["query"],
            ),
            db_pool_connections: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("quantaid_db_pool_connections", "Database pool connections by state (idle, in_use, max)."),
                    &["state"],
                )
                .expect("valid gauge"),
            ),
            db_pool_wait_timeouts: reg(
                &registry,
                IntCounter::new(
                    "quantaid_db_pool_wait_timeouts_total",
                    "Requests answered 503 because no database connection was free in time.",
                )
                .expect("valid counter"),
            ),
            tokens_issued: counter("quantaid_oauth_tokens_issued_total", "OAuth tokens issued by grant type.", &[
                "grant_type",
            ]),
            mfa_verifications: counter(
                "quantaid_mfa_verifications_total",
                "TOTP verifications by result (success, failure).",
                &["result"],
            ),
            logins: counter(
                "quantaid_logins_total",
                "Password logins by result (success, mfa_required, failure, throttled).",
                &["result"],
            ),
            password_hash_rejections: reg(
                &registry,
                IntCounter::new(
                    "quantaid_password_hash_rejections_total",
                    "Password hash/verify requests refused with 503 because the hashing queue was full.",
                )
                .expect("valid counter"),
            ),
            cache_invalidations: counter(
                "quantaid_cache_invalidations_total",
                "Revocation markers for the proxy cache, by result (published, deferred to the outbox).",
                &["result"],
            ),
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
