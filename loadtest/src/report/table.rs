//! The benchmark's output (`quantaid-loadtest bench`): conditions, a table on stdout,
//! and one JSON object per scenario on a line of its own (`grep '^{'` picks them out).
//! The columns are those of the numbers recorded in docs/benchmarks.md; keep them so
//! that new runs stay comparable.

use std::time::Duration;

use serde_json::{json, Value};

use crate::bench::ceiling;
use crate::bench::cpu::Usage;
use crate::metrics::Sample;

/// What the numbers depend on, printed with them.
pub struct Conditions {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub duration: Duration,
    pub warmup: Duration,
    pub pool_min: u32,
    pub pool_max: u32,
    pub hash_workers: usize,
    pub users: usize,
    pub tokens: usize,
    pub postgres: String,
    /// `/proc/loadavg`'s 1/5/15-minute averages when the run began: on a shared
    /// machine, other work skews every number.
    pub load_before: String,
}

impl Conditions {
    fn json(&self) -> Value {
        json!({
            "cores": self.cores,
            "cpu_model": self.cpu_model,
            "kernel": self.kernel,
            "duration_secs": self.duration.as_secs(),
            "warmup_secs": self.warmup.as_secs(),
            "argon2": {"algorithm": "argon2id", "m_kib": ceiling::M_COST_KIB, "t": ceiling::T_COST, "p": ceiling::P_COST},
            "db_pool": {"min": self.pool_min, "max": self.pool_max},
            "hash_workers": self.hash_workers,
            "users": self.users,
            "tokens": self.tokens,
            "postgres": self.postgres,
            "load_before": self.load_before,
        })
    }
}

/// One measured scenario.
pub struct Row {
    pub scenario: &'static str,
    pub target: &'static str,
    pub concurrency: usize,
    pub sample: Sample,
    /// Cores busy during the scenario (warm-up included).
    pub cpu: Usage,
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

pub fn print(c: &Conditions, rows: &[Row], login_pct_of_ceiling: Option<f64>) {
    println!();
    println!("QuantaID backend benchmark (direct to the backend, no proxy, no cache)");
    println!("  machine     {} cores ({}), kernel {}", c.cores, c.cpu_model, c.kernel);
    println!("  load avg    {} (1/5/15 min, before the run)", c.load_before);
    println!("  timing      {} s measured per scenario after {} s warm-up; closed loop", c.duration.as_secs(), c.warmup.as_secs());
    println!(
        "  argon2id    m={} KiB, t={}, p={}; backend hash workers {}",
        ceiling::M_COST_KIB,
        ceiling::T_COST,
        ceiling::P_COST,
        c.hash_workers
    );
    println!("  database    pool min {} max {}; {}", c.pool_min, c.pool_max, c.postgres);
    println!("  data        {} users, {} pre-issued tokens for introspection", c.users, c.tokens);
    println!();
    println!(
        "{:<22} {:<24} {:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}",
        "scenario", "target", "conc", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "err %"
    );
    for r in rows {
        let s = &r.sample.stats;
        println!(
            "{:<22} {:<24} {:>5} {:>9} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>7.2}",
            r.scenario,
            r.target,
            r.concurrency,
            s.requests,
            r.sample.throughput(),
            s.percentile_ms(50.0),
            s.percentile_ms(95.0),
            s.percentile_ms(99.0),
            s.max_ms(),
            s.failed,
            s.failed_rate() * 100.0
        );
        for (kind, n) in &s.failures {
            println!("{:<22}   error: {kind} x{n}", "");
        }
    }
    if let Some(pct) = login_pct_of_ceiling {
        println!();
        println!("logins/s are {pct:.1}% of the argon2id ceiling");
    }
    println!();
    println!("CPU, in cores busy (of {}), averaged over warm-up and measurement:", c.cores);
    println!("{:<22} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7}", "scenario", "machine", "backend", "postgres", "bench", "other", "steal");
    for r in rows {
        let u = &r.cpu;
        let pg = u.postgres.map_or("n/a".to_string(), |p| format!("{p:.2}"));
        println!("{:<22} {:>8.2} {:>8.2} {:>9} {:>7.2} {:>7.2} {:>7.2}", r.scenario, u.machine, u.backend, pg, u.bench, u.other, u.steal);
    }
    println!();
    for r in rows {
        let s = &r.sample.stats;
        let mut line = json!({
            "scenario": r.scenario,
            "target": r.target,
            "concurrency": r.concurrency,
            "requests": s.requests,
            "elapsed_secs": round(r.sample.elapsed.as_secs_f64(), 3),
            "throughput_per_sec": round(r.sample.throughput(), 2),
            "latency_ms": {
                "p50": s.percentile_ms(50.0),
                "p95": s.percentile_ms(95.0),
                "p99": s.percentile_ms(99.0),
                "max": s.max_ms(),
            },
            "errors": s.failed,
            "error_rate": round(s.failed_rate(), 6),
            "error_kinds": s.failures,
            "cpu_cores_busy": r.cpu.json(),
            "conditions": c.json(),
        });
        if r.scenario == "login" {
            if let Some(pct) = login_pct_of_ceiling {
                line["pct_of_argon2_ceiling"] = json!(round(pct, 1));
            }
        }
        println!("{line}");
    }
}
