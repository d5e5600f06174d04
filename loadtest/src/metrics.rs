//! What a run measured: per request name, every latency and failure, in total and per
//! second of the run (for the latency-over-time chart and for judging phases and steps).
//!
//! Latency is measured from when a request was *meant* to start (an arrival-rate
//! iteration's scheduled time), so a load generator that falls behind shows up as
//! latency instead of hiding it (coordinated omission).
//!
//! [`Stats`] is the one latency and failure tally: the scenarios' [`Recorder`] keeps one
//! per name and second, the benchmark's closed loops one per worker ([`Sample`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Whole-run latencies: 1 µs to 60 s at 3 significant digits.
fn total_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Per-second latencies: 2 significant digits keeps ten minutes of them small.
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds")
}

/// Latencies and outcomes of a set of requests.
#[derive(Clone)]
pub struct Stats {
    pub requests: u64,
    pub failed: u64,
    /// Failures by kind (`status 500`, `timeout`, `no session_token`, ...).
    pub failures: BTreeMap<String, u64>,
    pub latency_us: Histogram<u64>,
}

impl Stats {
    fn new(latency_us: Histogram<u64>) -> Stats {
        Stats { requests: 0, failed: 0, failures: BTreeMap::new(), latency_us }
    }

    /// No requests yet, at the whole-run precision.
    pub fn empty() -> Stats {
        Stats::new(total_histogram())
    }

    pub fn record(&mut self, latency: Duration, outcome: &Result<(), String>) {
        self.requests += 1;
        // Saturate rather than fail on an outlier beyond the histogram's range.
        self.latency_us.saturating_record(latency.as_micros().max(1) as u64);
        if let Err(kind) = outcome {
            self.failed += 1;
            *self.failures.entry(kind.clone()).or_default() += 1;
        }
    }

    pub fn add(&mut self, other: &Stats) {
        self.requests += other.requests;
        self.failed += other.failed;
        for (kind, n) in &other.failures {
            *self.failures.entry(kind.clone()).or_default() += n;
        }
        self.latency_us.add(&other.latency_us).expect("histograms share bounds");
    }

    pub fn failed_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed as f64 / self.requests as f64
        }
    }

    /// Latency at percentile `p` (0..=100), in milliseconds; 0 with no requests.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.latency_us.value_at_percentile(p) as f64 / 1000.0
        }
    }

    pub fn mean_ms(&self) -> f64 {
        self.latency_us.mean() / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }

    pub fn min_ms(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.latency_us.min() as f64 / 1000.0
        }
    }
}

/// What a closed loop measured after its warm-up: every counted request, and the time
/// from the end of the warm-up to the last counted completion.
pub struct Sample {
    pub stats: Stats,
    pub elapsed: Duration,
}

impl Sample {
    /// Adds up per-worker tallies; `elapsed` runs to the latest worker's last completion.
    pub fn merge(parts: Vec<(Stats, Instant)>, measure_from: Instant) -> Sample {
        let mut stats = Stats::empty();
        let mut end = measure_from;
        for (part, last_done) in parts {
            stats.add(&part);
            end = end.max(last_done);
        }
        Sample { stats, elapsed: end - measure_from }
    }

    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.requests as f64 / secs
        } else {
            0.0
        }
    }
}

struct NameStats {
    total: Stats,
    /// Index = second of the run in which the request was meant to start.
    seconds: Vec<Stats>,
}

#[derive(Default)]
struct Inner {
    names: BTreeMap<&'static str, NameStats>,
    /// Arrival-rate iterations not started because `max_vus` were all busy.
    dropped_iterations: u64,
    /// Active virtual users, sampled per second (closed-model scenarios).
    vus: Vec<u64>,
}

/// Shared by every virtual user of a run.
pub struct Recorder {
    started: Instant,
    inner: Mutex<Inner>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { started: Instant::now(), inner: Mutex::new(Inner::default()) }
    }

    #[cfg(test)]
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Seconds since the run started.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records one request named `name` that was meant to start at `start` and ended now.
    pub fn record(&self, name: &'static str, start: Instant, outcome: Result<(), String>) {
        let latency = start.elapsed();
        let second = start.saturating_duration_since(self.started).as_secs() as usize;
        let mut inner = self.inner.lock().expect("recorder lock");
        let entry = inner.names.entry(name).or_insert_with(|| NameStats { total: Stats::empty(), seconds: Vec::new() });
        entry.total.record(latency, &outcome);
        if entry.seconds.len() <= second {
            entry.seconds.resize_with(second + 1, || Stats::new(second_histogram()));
        }
        entry.seconds[second].record(latency, &outcome);
    }

    pub fn dropped_iteration(&self) {
        self.inner.lock().expect("recorder lock").dropped_iterations += 1;
    }

    pub fn sample_vus(&self, active: u64) {
        let second = self.started.elapsed().as_secs() as usize;
        let mut inner = self.inner.lock().expect("recorder lock");
        if inner.vus.len() <= second {
            let last = inner.vus.last().copied().unwrap_or(0);
            inner.vus.resize(second + 1, last);
        }
        inner.vus[second] = active;
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.inner.lock().expect("recorder lock");
        Snapshot {
            elapsed: self.started.elapsed(),
            names: inner
                .names
                .iter()
                .map(|(name, s)| (*name, NamedSnapshot { total: s.total.clone(), seconds: s.seconds.clone() }))
                .collect(),
            dropped_iterations: inner.dropped_iterations,
            vus: inner.vus.clone(),
        }
    }
}

pub struct NamedSnapshot {
    pub total: Stats,
    pub seconds: Vec<Stats>,
}

/// Everything a run recorded, for thresholds, checks and the report.
pub struct Snapshot {
    /// From the start of the measurement to this snapshot.
    pub elapsed: Duration,
    pub names: BTreeMap<&'static str, NamedSnapshot>,
    pub dropped_iterations: u64,
    pub vus: Vec<u64>,
}

impl Snapshot {
    /// All requests of `name`, or of every name with `None`.
    pub fn total(&self, name: Option<&str>) -> Stats {
        let mut out = Stats::empty();
        for (n, s) in &self.names {
            if name.is_none_or(|want| want == *n) {
                out.add(&s.total);
            }
        }
        out
    }

    /// Requests of `name` (or all) meant to start in seconds `from..to` of the run.
    pub fn window(&self, name: Option<&str>, from: usize, to: usize) -> Stats {
        let mut out = Stats::new(second_histogram());
        for (n, s) in &self.names {
            if name.is_none_or(|want| want == *n) {
                for second in s.seconds.iter().take(to).skip(from) {
                    out.add(second);
                }
            }
        }
        out
    }

    /// Length of the run in whole seconds, as far as requests were recorded.
    pub fn seconds(&self) -> usize {
        self.names.values().map(|s| s.seconds.len()).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_windows_and_failures_add_up() {
        let rec = Recorder::new();
        let t0 = rec.started();
        rec.record("login", t0, Ok(()));
        rec.record("login", t0, Err("status 500".into()));
        rec.record("check", t0 + Duration::from_millis(1500), Ok(()));
        rec.dropped_iteration();
        let snap = rec.snapshot();
        assert_eq!(snap.total(None).requests, 3);
        let login = snap.total(Some("login"));
        assert_eq!((login.requests, login.failed), (2, 1));
        assert_eq!(login.failures.get("status 500"), Some(&1));
        assert_eq!(snap.window(None, 0, 1).requests, 2);
        assert_eq!(snap.window(None, 1, 2).requests, 1);
        assert_eq!(snap.window(Some("check"), 0, 1).requests, 0);
        assert_eq!(snap.seconds(), 2);
        assert_eq!(snap.dropped_iterations, 1);
        assert!((login.failed_rate() - 0.5).abs() < 1e-9);
    }
}
