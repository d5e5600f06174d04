//! Token issuance (`TestOAuthTokenIssuanceUnder500QPS` in docs/design.md): `client_credentials`
//! grants arriving at a fixed rate, spread over the seeded OAuth clients.
//!
//! - `token-rate`: 500 per second for 10 minutes (k6 `constant-arrival-rate`).
//! - `token-stepup`: 500, 750, 1000, ... per second, 30 s each, until a step misses the
//!   criteria; the highest step that met them is the sustained rate.

use std::sync::Arc;
use std::time::Instant;

use super::{human, Ctx, Outcome};
use crate::charts::Marker;
use crate::client::{Api, OAuthClient, TokenAnswer};
use crate::executor::{arrival_rate, stage, Stage};
use crate::metrics::Recorder;
use crate::thresholds::{acceptance_criteria, Unit, Verdict};

/// Enough in flight for a second of backlog at the highest step.
const MAX_VUS: usize = 2000;

/// Offers grants at `start_rate` per second changing as `stages` say, recording each as `token`.
async fn offer(rec: &Arc<Recorder>, api: &Api, clients: &Arc<[OAuthClient]>, start_rate: f64, stages: &[Stage]) {
    arrival_rate(rec, start_rate, stages, MAX_VUS, |n, scheduled: Instant| {
        let (api, rec, clients) = (api.clone(), rec.clone(), clients.clone());
        async move {
            let client = &clients[n as usize % clients.len()];
            let outcome = match api.token(client).await {
                Ok(TokenAnswer::Issued) => Ok(()),
                Ok(TokenAnswer::Shed) => Err("status 503".into()),
                Err(e) => Err(e),
            };
            rec.record("token", scheduled, outcome);
        }
    })
    .await;
}

/// Ramps from 0 to `rate` before the measurement, unrecorded, so that connections and
/// pools are made here rather than in the first measured second (a cold start at full
/// rate would otherwise set the tail of a short run).
async fn warm_up(api: &Api, clients: &Arc<[OAuthClient]>, rate: f64) {
    offer(&Arc::new(Recorder::new()), api, clients, 0.0, &[stage(WARM_UP_SECS, rate)]).await;
}

const WARM_UP_SECS: u64 = 5;

pub async fn constant_rate(ctx: &Ctx) -> Outcome {
    let (rate, secs) = if ctx.quick { (500.0, 45) } else { (500.0, 600) };
    let clients: Arc<[OAuthClient]> = ctx.clients.clone().into();
    warm_up(&ctx.api, &clients, rate).await;
    let rec = Arc::new(Recorder::new());
    offer(&rec, &ctx.api, &clients, rate, &[stage(secs, rate)]).await;
    let snapshot = rec.snapshot();
    let verdicts = acceptance_criteria(None).iter().map(|t| t.judge(&snapshot)).collect();
    let total = snapshot.total(None);
    Outcome {
        shape: format!(
            "constant-arrival-rate: {rate} client_credentials grants/s for {} (up to {MAX_VUS} in flight), \
             round-robin over {} OAuth clients, after a {WARM_UP_SECS} s warm-up ramp that is not counted.",
            human(secs),
            clients.len()
        ),
        notes: vec![format!(
            "Issued {} tokens in {} s: {:.1}/s achieved of {rate}/s offered; {} iterations dropped.",
            total.requests - total.failed,
            secs,
            (total.requests - total.failed) as f64 / secs as f64,
            snapshot.dropped_iterations
        )],
        snapshot,
        verdicts,
        markers: Vec::new(),
    }
}

/// One step's result.
struct Step {
    target: f64,
    achieved: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    failed_rate: f64,
}

impl Step {
    /// The acceptance criteria, and the offered rate really delivered.
    fn held(&self) -> bool {
        self.failed_rate < 0.001 && self.p95 < 500.0 && self.p99 < 1000.0 && self.achieved >= self.target * 0.98
    }
}

pub async fn step_up(ctx: &Ctx) -> Outcome {
    let (first, increment, step_secs, max_steps) = if ctx.quick { (100.0, 100.0, 10, 5) } else { (500.0, 250.0, 30, 40) };
    let clients: Arc<[OAuthClient]> = ctx.clients.clone().into();
    let mut steps: Vec<Step> = Vec::new();
    let mut markers = Vec::new();
    warm_up(&ctx.api, &clients, first).await;
    let rec = Arc::new(Recorder::new());
    for i in 0..max_steps {
        let target = first + increment * i as f64;
        let from = rec.elapsed_secs().ceil() as usize;
        let dropped_before = rec.snapshot().dropped_iterations;
        markers.push(Marker { at_secs: rec.elapsed_secs(), label: format!("{target}/s") });
        offer(&rec, &ctx.api, &clients, target, &[stage(step_secs, target)]).await;
        let snapshot = rec.snapshot();
        // Whole seconds inside the step; its in-flight tail is still recorded by start time.
        let w = snapshot.window(None, from, from + step_secs as usize - 1);
        let dropped = snapshot.dropped_iterations - dropped_before;
        let secs = (step_secs - 1) as f64;
        let step = Step {
            target,
            achieved: (w.requests - w.failed) as f64 / secs,
            p50: w.percentile_ms(50.0),
            p95: w.percentile_ms(95.0),
            p99: w.percentile_ms(99.0),
            failed_rate: (w.failed + dropped) as f64 / (w.requests + dropped).max(1) as f64,
        };
        let held = step.held();
        steps.push(step);
        if !held {
            break;
        }
    }
    let highest = steps.iter().take_while(|s| s.held()).last().map(|s| s.target);
    let mut table =
        String::from("| offered/s | achieved/s | p50 ms | p95 ms | p99 ms | failed | held |\n|---:|---:|---:|---:|---:|---:|:---:|\n");
    for s in &steps {
        table.push_str(&format!(
            "| {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3}% | {} |\n",
            s.target,
            s.achieved,
            s.p50,
            s.p95,
            s.p99,
            s.failed_rate * 100.0,
            if s.held() { "yes" } else { "no" }
        ));
    }
    let summary = match highest {
        Some(rate) => format!("Highest rate held (failed < 0.1%, p95 < 500 ms, p99 < 1 s, ≥ 98% delivered): **{rate:.0} grants/s**."),
        None => "Not even the first step was held.".to_string(),
    };
    let verdicts =
        vec![Verdict::new(format!("highest held grants/s >= {first}"), highest.unwrap_or(0.0), Unit::PerSecond, highest.is_some())];
    Outcome {
        shape: format!(
            "stepped constant-arrival-rate: {first}/s, then +{increment}/s every {}, up to {max_steps} steps, \
             stopping after the first step that misses the criteria; client_credentials over {} OAuth clients; \
             a {WARM_UP_SECS} s warm-up ramp to the first rate is not counted.",
            human(step_secs),
            clients.len()
        ),
        notes: vec![summary, table],
        snapshot: rec.snapshot(),
        verdicts,
        markers,
    }
}
