//! The proxy's Prometheus metrics, in the default registry that `pingora-prometheus`
//! serves on the metrics port. Labels are route templates, status codes and fixed
//! enums, never keys or IDs, and never a value the client chose
//! (`quantaid_protocol::metrics`).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, HistogramVec, IntCounter, IntCounterVec,
    IntGauge,
};
use quantaid_protocol::metrics::{method_label, status_label};
use quantaid_runtime::process::ProcessCollector;

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
    pub bloom_last_refresh: IntGauge,
    pub local_cache_hits: IntCounter,
    pub local_cache_fences: IntCounter,
    pub local_cache_invalidations: IntCounterVec,
    pub local_cache_bytes: IntGauge,
}

impl Metrics {
    /// Counts one answered request. `template` is a route template from
    /// `routes::classify` (or `unmatched`), so every label comes from a closed set.
    pub fn record_request(&self, method: &http::Method, template: &'static str, status: u16, elapsed: Duration) {
        let method = method_label(method.as_str());
        self.http_requests.with_label_values(&[method, template, &status_label(status)]).inc();
        self.http_duration.with_label_values(&[method, template]).observe(elapsed.as_secs_f64());
    }
}

/// The proxy's metrics, registered on first use (`build_server` forces that at start-up).
// A static rather than state passed to every handler because pingora-prometheus serves
// the default registry. Registering constant, distinct metric definitions can only fail
// by a programming error, which every test that starts the proxy would hit: the
// `expect`s below assert that invariant rather than handle a run-time condition.
#[allow(clippy::expect_used)]
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let failed = "metric names are unique and valid";
    prometheus::register(Box::new(ProcessCollector::new().expect(failed))).expect(failed);
    let metrics = Metrics {
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
        cache_misses: register_int_counter_vec!("quantaid_cache_misses_total", "Lookups Redis could not answer, by kind.", &["kind"])
            .expect(failed),
        cache_fallback: register_int_counter!(
            "quantaid_cache_fallback_total",
            "Lookups answered by the backend because Redis failed, timed out or its breaker was open."
        )
        .expect(failed),
        redis_up: register_int_gauge!("quantaid_redis_up", "1 while the Redis circuit is closed, 0 while open.").expect(failed),
        redis_memory_used: register_int_gauge!("quantaid_redis_memory_used_bytes", "used_memory from Redis INFO memory.").expect(failed),
        bloom_rejections: register_int_counter_vec!(
            "quantaid_bloom_rejections_total",
            "Lookups answered 'not found' without Redis or the backend, by reason (absent, malformed).",
            &["reason"]
        )
        .expect(failed),
        bloom_keys: register_int_gauge!("quantaid_bloom_keys", "Keys inserted into the current Bloom filter.").expect(failed),
        singleflight_coalesced: register_int_counter!(
            "quantaid_singleflight_coalesced_total",
            "Cache misses that waited for another request's backend call instead of making their own."
        )
        .expect(failed),
        bloom_last_refresh: register_int_gauge!(
            "quantaid_bloom_last_refresh_timestamp_seconds",
            "When the Bloom filter last took a snapshot from the backend (rebuild or catch-up), in Unix seconds; 0 before the first."
        )
        .expect(failed),
        local_cache_hits: register_int_counter!(
            "quantaid_cache_local_hits_total",
            "Cache hits answered from the local tier after a fence, without a Redis read (also counted in quantaid_cache_hits_total)."
        )
        .expect(failed),
        local_cache_fences: register_int_counter!(
            "quantaid_cache_local_fences_total",
            "Fence round trips to Redis; each one releases every local hit that was waiting for it."
        )
        .expect(failed),
        local_cache_invalidations: register_int_counter_vec!(
            "quantaid_cache_local_invalidations_total",
            "Local tier invalidations, by scope: one entry (key), or all (a marker changed, the connection closed or a fence failed).",
            &["scope"]
        )
        .expect(failed),
        local_cache_bytes: register_int_gauge!("quantaid_cache_local_bytes", "Bytes held by the local tier.").expect(failed),
    };
    // Every series of a fixed label set exists from the start, at 0, so rates and
    // ratios over it are defined before the first event.
    for kind in ["session", "token", "user"] {
        metrics.cache_hits.with_label_values(&[kind]);
        metrics.cache_misses.with_label_values(&[kind]);
    }
    for scope in ["key", "all"] {
        metrics.local_cache_invalidations.with_label_values(&[scope]);
    }
    for reason in ["absent", "malformed"] {
        metrics.bloom_rejections.with_label_values(&[reason]);
    }
    metrics
});
