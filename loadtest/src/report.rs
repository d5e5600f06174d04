//! The reports. `table` prints the benchmark's table; this module writes the report
//! directory of a scenario run:
//!
//! - `summary.txt`: the end-of-test summary in k6's layout (also printed);
//! - `summary.json`: the same figures for machines;
//! - `timeseries.csv`: per second and request name, requests, failures, p50/p95/p99;
//! - `latency-over-time.png`, `latency-histogram.png`;
//! - `summary.md`: the short human summary that links the rest.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use crate::charts::{self, Bucket, Distribution, Second, TimeSeries};
use crate::metrics::{Snapshot, Stats};
use crate::scenarios::Outcome;
use crate::thresholds::{Unit, Verdict};

pub mod table;

/// Where and how a run happened.
pub struct RunInfo<'a> {
    pub scenario: &'a str,
    pub quick: bool,
    pub started_utc: String,
    /// Machine, build and stack settings, in words.
    pub conditions: String,
}

const PERCENTILES: [f64; 4] = [50.0, 90.0, 95.0, 99.0];

pub fn write(dir: &Path, info: &RunInfo, outcome: &Outcome) -> anyhow::Result<String> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let snapshot = &outcome.snapshot;
    let text = k6_summary(info, outcome);
    fs::write(dir.join("summary.txt"), &text)?;
    fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary_json(info, outcome))?)?;
    fs::write(dir.join("timeseries.csv"), timeseries_csv(snapshot))?;
    let title = format!("{}{}", info.scenario, if info.quick { " (quick)" } else { "" });
    let series: Vec<TimeSeries> = snapshot.names.iter().map(|(name, s)| time_series(name, &s.seconds)).collect();
    charts::latency_over_time(
        &dir.join("latency-over-time.png"),
        &format!("{title}: latency and throughput per second"),
        &series,
        &outcome.markers,
        &[500.0, 1000.0],
    )?;
    let dists: Vec<Distribution> = snapshot.names.iter().map(|(name, s)| distribution(name, &s.total)).collect();
    charts::latency_histogram(&dir.join("latency-histogram.png"), &format!("{title}: latency distribution"), &dists)?;
    fs::write(dir.join("summary.md"), markdown(info, outcome))?;
    Ok(text)
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2}s", v / 1000.0)
    } else {
        format!("{v:.2}ms")
    }
}

fn latency_line(s: &Stats) -> String {
    format!(
        "avg={} min={} med={} max={} p(90)={} p(95)={} p(99)={}",
        ms(s.mean_ms()),
        ms(s.min_ms()),
        ms(s.percentile_ms(50.0)),
        ms(s.max_ms()),
        ms(s.percentile_ms(90.0)),
        ms(s.percentile_ms(95.0)),
        ms(s.percentile_ms(99.0))
    )
}

/// A verdict's measured value in its unit.
fn measured(v: &Verdict) -> String {
    match v.unit {
        Unit::Millis => ms(v.value),
        Unit::Ratio => format!("{:.3}%", v.value * 100.0),
        Unit::PerSecond => format!("{:.0}/s", v.value),
        Unit::Count => format!("{:.0}", v.value),
    }
}

fn dotted(label: &str) -> String {
    format!("{label:.<32}:")
}

fn k6_summary(info: &RunInfo, outcome: &Outcome) -> String {
    let snap = &outcome.snapshot;
    let total = snap.total(None);
    let secs = outcome.snapshot.elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let _ = writeln!(out, "  scenario: {}{}", info.scenario, if info.quick { " (quick)" } else { "" });
    let _ = writeln!(out, "  load:     {}\n", outcome.shape);
    for v in &outcome.verdicts {
        let _ = writeln!(out, "  {} {}  ({})", if v.ok { "✓" } else { "✗" }, v.rule, measured(v));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  {} {}", dotted("http_req_duration"), latency_line(&total));
    for (name, s) in &snap.names {
        let _ = writeln!(out, "    {} {}", dotted(&format!("{{ name:{name} }}")), latency_line(&s.total));
    }
    let _ =
        writeln!(out, "  {} {:.2}%  {} out of {}", dotted("http_req_failed"), total.failed_rate() * 100.0, total.failed, total.requests);
    let _ = writeln!(out, "  {} {}  {:.1}/s", dotted("http_reqs"), total.requests, total.requests as f64 / secs);
    for (name, s) in &snap.names {
        let _ =
            writeln!(out, "    {} {}  {:.1}/s", dotted(&format!("{{ name:{name} }}")), s.total.requests, s.total.requests as f64 / secs);
    }
    let _ = writeln!(out, "  {} {}", dotted("dropped_iterations"), snap.dropped_iterations);
    if let Some(max) = snap.vus.iter().max() {
        let _ = writeln!(out, "  {} {max}", dotted("vus_max"));
    }
    for (kind, n) in &total.failures {
        let _ = writeln!(out, "  {} {n}", dotted(&format!("failure: {kind}")));
    }
    let _ = writeln!(out, "\n  running ({:.1}s), {}", secs, if outcome.passed() { "thresholds passed" } else { "THRESHOLDS FAILED" });
    out
}

fn stats_json(s: &Stats, secs: f64) -> Value {
    let mut latency = serde_json::Map::new();
    latency.insert("avg".into(), json!(s.mean_ms()));
    latency.insert("min".into(), json!(s.min_ms()));
    latency.insert("max".into(), json!(s.max_ms()));
    for p in PERCENTILES {
        latency.insert(format!("p({p})"), json!(s.percentile_ms(p)));
    }
    json!({
        "requests": s.requests,
        "rate_per_s": s.requests as f64 / secs,
        "failed": s.failed,
        "failed_rate": s.failed_rate(),
        "failures": s.failures,
        "latency_ms": latency,
    })
}

fn summary_json(info: &RunInfo, outcome: &Outcome) -> Value {
    let snap = &outcome.snapshot;
    let secs = outcome.snapshot.elapsed.as_secs_f64().max(1e-9);
    let names: serde_json::Map<String, Value> = snap.names.iter().map(|(n, s)| (n.to_string(), stats_json(&s.total, secs))).collect();
    json!({
        "scenario": info.scenario,
        "quick": info.quick,
        "started_utc": info.started_utc,
        "duration_s": secs,
        "load": outcome.shape,
        "conditions": info.conditions,
        "passed": outcome.passed(),
        "verdicts": outcome.verdicts,
        "all": stats_json(&snap.total(None), secs),
        "by_name": names,
        "dropped_iterations": snap.dropped_iterations,
        "vus_max": snap.vus.iter().max(),
        "notes": outcome.notes,
    })
}

fn timeseries_csv(snap: &Snapshot) -> String {
    let mut out = String::from("second,name,requests,failed,p50_ms,p95_ms,p99_ms,vus\n");
    for (name, s) in &snap.names {
        for (second, st) in s.seconds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{second},{name},{},{},{:.3},{:.3},{:.3},{}",
                st.requests,
                st.failed,
                st.percentile_ms(50.0),
                st.percentile_ms(95.0),
                st.percentile_ms(99.0),
                snap.vus.get(second).copied().unwrap_or(0)
            );
        }
    }
    out
}

fn time_series(name: &str, seconds: &[Stats]) -> TimeSeries {
    TimeSeries {
        name: name.to_string(),
        seconds: seconds
            .iter()
            .enumerate()
            .map(|(i, s)| Second {
                at_secs: i as f64,
                requests: s.requests,
                failed: s.failed,
                p50_ms: s.percentile_ms(50.0),
                p95_ms: s.percentile_ms(95.0),
                p99_ms: s.percentile_ms(99.0),
            })
            .collect(),
    }
}

/// Ten log-spaced buckets per decade from 0.1 ms to 60 s.
fn distribution(name: &str, s: &Stats) -> Distribution {
    const PER_DECADE: f64 = 10.0;
    let upper = |k: usize| 0.1 * 10f64.powf(k as f64 / PER_DECADE);
    let count = (PER_DECADE * (60_000.0f64 / 0.1).log10()).ceil() as usize + 1;
    let mut buckets: Vec<Bucket> = (0..count).map(|k| Bucket { upper_ms: upper(k), count: 0 }).collect();
    for v in s.latency_us.iter_recorded() {
        let value_ms = v.value_iterated_to() as f64 / 1000.0;
        let k = if value_ms <= 0.1 { 0 } else { (PER_DECADE * (value_ms / 0.1).log10()).ceil() as usize };
        buckets[k.min(count - 1)].count += v.count_at_value();
    }
    // Trim empty buckets at both ends so the chart spans what happened.
    let first = buckets.iter().position(|b| b.count > 0).unwrap_or(0);
    let last = buckets.iter().rposition(|b| b.count > 0).unwrap_or(0);
    Distribution { name: name.to_string(), buckets: buckets.drain(first.saturating_sub(1)..=last).collect() }
}

fn markdown(info: &RunInfo, outcome: &Outcome) -> String {
    let snap = &outcome.snapshot;
    let secs = outcome.snapshot.elapsed.as_secs_f64().max(1e-9);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Load test `{}`{}: {}\n",
        info.scenario,
        if info.quick { " (quick)" } else { "" },
        if outcome.passed() { "passed" } else { "FAILED" }
    );
    let _ = writeln!(md, "- Started {} UTC, ran {:.0} s.", info.started_utc, secs);
    let _ = writeln!(md, "- Load: {}", outcome.shape);
    let _ = writeln!(md, "- Conditions: {}\n", info.conditions);
    let _ = writeln!(md, "## Criteria\n\n| criterion | measured | result |\n|---|---:|:---:|");
    for v in &outcome.verdicts {
        let _ = writeln!(md, "| `{}` | {} | {} |", v.rule, measured(v), if v.ok { "pass" } else { "**FAIL**" });
    }
    let _ = writeln!(
        md,
        "\n## Requests\n\n| name | requests | per second | failed | p50 | p90 | p95 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let total = snap.total(None);
    let rows = snap.names.iter().map(|(n, s)| (n.to_string(), &s.total)).chain(std::iter::once(("all".to_string(), &total)));
    for (name, s) in rows {
        let _ = writeln!(
            md,
            "| {name} | {} | {:.1} | {:.3}% | {} | {} | {} | {} | {} |",
            s.requests,
            s.requests as f64 / secs,
            s.failed_rate() * 100.0,
            ms(s.percentile_ms(50.0)),
            ms(s.percentile_ms(90.0)),
            ms(s.percentile_ms(95.0)),
            ms(s.percentile_ms(99.0)),
            ms(s.max_ms())
        );
    }
    if snap.dropped_iterations > 0 {
        let _ = writeln!(md, "\nDropped iterations (not sent: every virtual user busy): {}", snap.dropped_iterations);
    }
    if !total.failures.is_empty() {
        let _ =
            writeln!(md, "\nFailures by kind: {}", total.failures.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", "));
    }
    if !outcome.notes.is_empty() {
        let _ = writeln!(md, "\n## Findings\n");
        for note in &outcome.notes {
            let _ = writeln!(md, "{note}\n");
        }
    }
    let _ = writeln!(
        md,
        "\n## Charts\n\n![latency and throughput over time](latency-over-time.png)\n\n![latency histogram](latency-histogram.png)\n"
    );
    let _ = writeln!(md, "Raw figures: `summary.txt` (k6-style summary), `summary.json`, `timeseries.csv`.");
    md
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::Recorder;

    #[test]
    fn histogram_buckets_hold_every_request_once() {
        let rec = Recorder::new();
        for _ in 0..10 {
            rec.record("check", std::time::Instant::now() - Duration::from_millis(2), Ok(()));
        }
        rec.record("check", std::time::Instant::now() - Duration::from_millis(700), Ok(()));
        let snap = rec.snapshot();
        let d = distribution("check", &snap.total(Some("check")));
        assert_eq!(d.buckets.iter().map(|b| b.count).sum::<u64>(), 11);
        assert!(d.buckets.windows(2).all(|w| w[0].upper_ms < w[1].upper_ms));
        let slow = d.buckets.iter().find(|b| b.count == 1).expect("the 700 ms request");
        assert!(slow.upper_ms >= 700.0 && slow.upper_ms < 1000.0, "{}", slow.upper_ms);
    }
}
