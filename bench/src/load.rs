//! The closed-loop load generator and its statistics.
//!
//! Closed loop: each of C workers sends one request, waits for the answer, and sends
//! the next, so at most C requests are in flight and the offered load adapts to the
//! server's speed (no coordinated-omission queue builds up on our side). Requests that
//! start during the warm-up are not counted; no request starts after the deadline, and
//! each one is bounded by the HTTP client's timeout, so a run always ends.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies from 1 µs to 60 s at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What one scenario measured.
pub struct Sample {
    pub requests: u64,
    pub errors: u64,
    /// Error counts by kind (`status 503`, `timeout`, `inactive token`, ...).
    pub error_kinds: BTreeMap<String, u64>,
    /// Latency of every counted request, successful or not, in microseconds.
    pub latency_us: Histogram<u64>,
    /// From the end of the warm-up to the last counted completion.
    pub elapsed: Duration,
}

impl Default for Sample {
    fn default() -> Self {
        Sample { requests: 0, errors: 0, error_kinds: BTreeMap::new(), latency_us: histogram(), elapsed: Duration::ZERO }
    }
}

impl Sample {
    pub fn record(&mut self, latency: Duration, result: Result<(), String>) {
        self.requests += 1;
        // Saturate rather than fail on an outlier beyond the histogram's range.
        self.latency_us.saturating_record(latency.as_micros().max(1) as u64);
        if let Err(kind) = result {
            self.errors += 1;
            *self.error_kinds.entry(kind).or_default() += 1;
        }
    }

    /// Adds up per-worker samples; `elapsed` runs to the latest worker's last completion.
    pub fn merge(parts: Vec<(Sample, Instant)>, measure_from: Instant) -> Sample {
        let mut total = Sample::default();
        let mut end = measure_from;
        for (part, last_done) in parts {
            total.requests += part.requests;
            total.errors += part.errors;
            for (kind, n) in part.error_kinds {
                *total.error_kinds.entry(kind).or_default() += n;
            }
            total.latency_us.add(&part.latency_us).expect("histograms share bounds");
            end = end.max(last_done);
        }
        total.elapsed = end - measure_from;
        total
    }

    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests > 0 {
            self.errors as f64 / self.requests as f64
        } else {
            0.0
        }
    }

    /// Latency at quantile `q` (0..=1), in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }
}

/// Runs `op` in a closed loop on `concurrency` tokio tasks for `warmup + duration`.
/// `op` gets a global sequence number (to rotate users or tokens) and says whether the
/// request succeeded, or what kind of error it got.
pub async fn closed_loop<F, Fut>(concurrency: usize, warmup: Duration, duration: Duration, op: F) -> Sample
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let seq = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (op, seq) = (op.clone(), seq.clone());
        workers.spawn(async move {
            let mut sample = Sample::default();
            let mut last_done = measure_from;
            loop {
                let started = Instant::now();
                if started >= deadline {
                    break;
                }
                let result = op(seq.fetch_add(1, Ordering::Relaxed)).await;
                let done = Instant::now();
                if started >= measure_from {
                    sample.record(done - started, result);
                    last_done = done;
                }
            }
            (sample, last_done)
        });
    }
    let mut parts = Vec::with_capacity(concurrency);
    while let Some(part) = workers.join_next().await {
        parts.push(part.expect("load worker panicked"));
    }
    Sample::merge(parts, measure_from)
}

/// Describes a failed request by kind, for the error breakdown.
pub fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_requests_and_errors_and_stops_at_the_deadline() {
        let started = Instant::now();
        let sample = closed_loop(4, Duration::from_millis(50), Duration::from_millis(200), |n| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if n % 10 == 0 {
                Err("status 503".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(sample.requests > 20, "{}", sample.requests);
        assert!(sample.errors > 0 && sample.errors < sample.requests);
        assert_eq!(sample.error_kinds.get("status 503"), Some(&sample.errors));
        assert!(sample.latency_ms(0.5) >= 5.0);
        assert!(sample.throughput() > 0.0);
    }
}
