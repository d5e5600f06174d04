//! Pass/fail criteria, written and reported in k6's threshold syntax so that they read
//! the same as in any k6 report: `http_req_duration{name:login}: p(95)<500`.

use std::fmt;

use crate::metrics::Snapshot;

#[derive(Clone, Copy, Debug)]
pub enum Metric {
    /// Latency in ms at a percentile, of one request name or of all.
    Duration { name: Option<&'static str>, percentile: f64 },
    /// Share of requests that failed; over all names it includes dropped iterations,
    /// since a request the schedule called for and could not send is a failure too.
    FailedRate { name: Option<&'static str> },
}

/// `metric < limit` must hold.
#[derive(Clone, Copy, Debug)]
pub struct Threshold {
    pub metric: Metric,
    pub limit: f64,
}

/// The acceptance criteria (AC-1, docs/design.md) for `name`, or for every request with `None`:
/// p95 < 500 ms, p99 < 1 s, and fewer than 0.1% of requests failed.
pub fn acceptance_criteria(name: Option<&'static str>) -> Vec<Threshold> {
    vec![
        Threshold { metric: Metric::Duration { name, percentile: 95.0 }, limit: 500.0 },
        Threshold { metric: Metric::Duration { name, percentile: 99.0 }, limit: 1000.0 },
        Threshold { metric: Metric::FailedRate { name }, limit: 0.001 },
    ]
}

/// What a measured value counts, for printing it.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Millis,
    /// A share from 0 to 1, printed as a percentage.
    Ratio,
    PerSecond,
    /// A number of events.
    Count,
}

/// One criterion and what the run measured for it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    pub rule: String,
    pub value: f64,
    pub unit: Unit,
    pub ok: bool,
}

impl Verdict {
    pub fn new(rule: impl Into<String>, value: f64, unit: Unit, ok: bool) -> Verdict {
        Verdict { rule: rule.into(), value, unit, ok }
    }
}

fn tag(name: Option<&str>) -> String {
    name.map(|n| format!("{{name:{n}}}")).unwrap_or_default()
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.metric {
            Metric::Duration { name, percentile } => {
                write!(f, "http_req_duration{}: p({percentile})<{}", tag(name), self.limit)
            }
            Metric::FailedRate { name } => {
                write!(f, "http_req_failed{}: rate<{}", tag(name), self.limit)
            }
        }
    }
}

impl Threshold {
    pub fn measure(&self, snapshot: &Snapshot) -> f64 {
        match self.metric {
            Metric::Duration { name, percentile } => snapshot.total(name).percentile_ms(percentile),
            Metric::FailedRate { name } => {
                let stats = snapshot.total(name);
                let dropped = if name.is_none() { snapshot.dropped_iterations } else { 0 };
                let attempted = stats.requests + dropped;
                if attempted == 0 {
                    0.0
                } else {
                    (stats.failed + dropped) as f64 / attempted as f64
                }
            }
        }
    }

    pub fn judge(&self, snapshot: &Snapshot) -> Verdict {
        let value = self.measure(snapshot);
        let unit = match self.metric {
            Metric::Duration { .. } => Unit::Millis,
            Metric::FailedRate { .. } => Unit::Ratio,
        };
        Verdict::new(self.to_string(), value, unit, value < self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Recorder;

    #[test]
    fn reads_like_k6_and_fails_on_a_breach() {
        let rules = acceptance_criteria(Some("login"));
        assert_eq!(rules[0].to_string(), "http_req_duration{name:login}: p(95)<500");
        assert_eq!(rules[2].to_string(), "http_req_failed{name:login}: rate<0.001");
        assert_eq!(acceptance_criteria(None)[1].to_string(), "http_req_duration: p(99)<1000");

        let rec = Recorder::new();
        for _ in 0..999 {
            rec.record("login", std::time::Instant::now(), Ok(()));
        }
        let snap = rec.snapshot();
        assert!(rules.iter().all(|r| r.judge(&snap).ok));

        rec.record("login", std::time::Instant::now(), Err("status 500".into()));
        rec.record("login", std::time::Instant::now(), Err("timeout".into()));
        let verdict = rules[2].judge(&rec.snapshot());
        assert!(!verdict.ok && verdict.value > 0.001, "{verdict:?}");

        // Dropped iterations count against the overall failure rate.
        let rec = Recorder::new();
        rec.record("token", std::time::Instant::now(), Ok(()));
        rec.dropped_iteration();
        assert!(!acceptance_criteria(None)[2].judge(&rec.snapshot()).ok);
    }
}
