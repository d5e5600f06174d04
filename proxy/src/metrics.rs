//! The proxy's Prometheus metrics, in the default registry that `pingora-prometheus`
//! serves on the metrics port. Labels are route templates, status codes and fixed
//! enums, never keys or IDs.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, HistogramVec,
    IntCounter, IntCounterVec, IntGauge,
};

/// 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Metrics {
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounterVec,
    pub cache_fallback: IntCounter,
    pub redis_up: IntGauge,
    pub redis_memory_used: IntGauge,
    pub bloom_rejections: IntCounterVec,
    pub bloom_keys: IntGauge,
    pub singleflight_coalesced: IntCounter,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let failed = "metric names are unique and valid";
    Metrics {
        http_requests: register_int_counter_vec!(
            "quantaid_http_requests_total",
            "Requests by method, route template and status.",
            &["method", "path", "status"]
        )
        .expect(failed),
        http_duration: register_histogram_vec!(
            "quantaid_http_request_duration_seconds",
            "Request latency at the proxy by method and route template.",
            &["method", "path"],
            LATENCY_BUCKETS.to_vec()
        )
        .expect(failed),
        upstream_duration: register_histogram_vec!(
            "quantaid_upstream_request_duration_seconds",
            "Latency of calls to the identity backend by route template.",
            &["path"],
            LATENCY_BUCKETS.to_vec()
        )
        .expect(failed),
        cache_hits: register_int_counter_vec!(
            "quantaid_cache_hits_total",
            "Lookups answered from Redis, by kind (session, token, user).",
            &["kind"]
        )
        .expect(failed),
        cache_misses: register_int_counter_vec!(
            "quantaid_cache_misses_total",
            "Lookups Redis could not answer, by kind.",
            &["kind"]
        )
        .expect(failed),
        cache_fallback: register_int_counter!(
            "quantaid_cache_fallback_total",
            "Lookups answered by the backend because Redis failed, timed out or its breaker was open."
        )
        .expect(failed),
        redis_up: register_int_gauge!("quantaid_redis_up", "1 while the Redis circuit is closed, 0 while open.")
            .expect(failed),
        redis_memory_used: register_int_gauge!(
            "quantaid_redis_memory_used_bytes",
            "used_memory from Redis INFO memory."
        )
        .expect(failed),
        bloom_rejections: register_int_counter_vec!(
            "quantaid_bloom_rejections_total",
            "Lookups answered 'not found' without Redis or the backend, by reason (absent, malformed).",
            &["reason"]
        )
        .expect(failed),
        bloom_keys: register_int_gauge!("quantaid_bloom_keys", "Keys inserted into the current Bloom filter.")
            .expect(failed),
        singleflight_coalesced: register_int_counter!(
            "quantaid_singleflight_coalesced_total",
            "Cache misses that waited for another request's backend call instead of making their own."
        )
        .expect(failed),
    }
});
