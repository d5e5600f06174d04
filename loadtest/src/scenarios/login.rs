//! Login under 1000 concurrent users (`TestLoginEndpointUnder1000Users` in docs/design.md).
//!
//! - `login`: the realistic model. Each virtual user is one person: logs in, then views
//!   pages (each behind an ingress forward-auth check, some also reading the session)
//!   with think time between them, then logs out or simply leaves, and comes back later.
//! - `login-ramp`: the pure ramp. Users do nothing but log in, pausing 1 s, as
//!   in k6's classic login test; it shows where password hashing saturates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{human, Ctx, Outcome};
use crate::client::Api;
use crate::executor::{ramping_vus, stage, total_duration, Stage, Stop};
use crate::metrics::{Recorder, Snapshot};
use crate::seed::username;
use crate::thresholds::acceptance_criteria;

fn uniform(lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(rand::thread_rng().gen_range(lo..hi))
}

/// Sends one request and records it under `name`.
async fn timed<T>(rec: &Recorder, name: &'static str, f: impl std::future::Future<Output = Result<T, String>>) -> Option<T> {
    let start = Instant::now();
    match f.await {
        Ok(v) => {
            rec.record(name, start, Ok(()));
            Some(v)
        }
        Err(e) => {
            rec.record(name, start, Err(e));
            None
        }
    }
}

/// Think time between page views, pages per visit, and the pause between visits.
const THINK_SECS: (f64, f64) = (2.0, 6.0);
const PAGES_PER_VISIT: (u32, u32) = (10, 30);

/// One person's visits: log in, look around, log out (half the time) or leave.
async fn person(api: Api, rec: Arc<Recorder>, user: String, mut stop: Stop) {
    while !stop.is_set() {
        let Some(session) = timed(&rec, "login", api.login(&user)).await else {
            if !stop.think(uniform(1.0, 2.0)).await {
                return;
            }
            continue;
        };
        let pages = rand::thread_rng().gen_range(PAGES_PER_VISIT.0..=PAGES_PER_VISIT.1);
        for page in 0..pages {
            if !stop.think(uniform(THINK_SECS.0, THINK_SECS.1)).await {
                return;
            }
            timed(&rec, "check", api.check(&session)).await;
            // The application reads the session on some pages (its own header, say).
            if page % 4 == 0 {
                timed(&rec, "session", api.session(&session)).await;
            }
        }
        if rand::thread_rng().gen_bool(0.5) {
            timed(&rec, "logout", api.logout(&session)).await;
        }
        if !stop.think(uniform(THINK_SECS.0, THINK_SECS.1)).await {
            return;
        }
    }
}

pub async fn journey(ctx: &Ctx) -> Outcome {
    let stages: Vec<Stage> = if ctx.quick {
        vec![stage(20, 200.0), stage(30, 200.0), stage(5, 0.0)]
    } else {
        vec![stage(120, 1000.0), stage(480, 1000.0), stage(30, 0.0)]
    };
    let rec = Arc::new(Recorder::new());
    let users = ctx.users;
    ramping_vus(&rec, &stages, |vu, stop| person(ctx.api.clone(), rec.clone(), username(vu as usize % users), stop)).await;
    let snapshot = rec.snapshot();
    let mut verdicts: Vec<_> = acceptance_criteria(None).iter().map(|t| t.judge(&snapshot)).collect();
    verdicts.extend(acceptance_criteria(Some("login")).iter().map(|t| t.judge(&snapshot)));
    let peak = stages.iter().map(|s| s.target as u64).max().unwrap_or(0);
    Outcome {
        shape: format!(
            "ramping-vus: 0 → {peak} users over {}, held {}, down over {}. Each user logs in, views {}–{} pages \
             {}–{} s apart (a forward-auth check per page, a session read on every 4th), logs out half the time, \
             pauses {}–{} s, and logs in again.",
            human(stages[0].duration.as_secs()),
            human(stages[1].duration.as_secs()),
            human(stages[2].duration.as_secs()),
            PAGES_PER_VISIT.0,
            PAGES_PER_VISIT.1,
            THINK_SECS.0,
            THINK_SECS.1,
            THINK_SECS.0,
            THINK_SECS.1,
        ),
        notes: vec![peak_note(&snapshot)],
        snapshot,
        verdicts,
        markers: Vec::new(),
    }
}

pub async fn ramp(ctx: &Ctx) -> Outcome {
    let stages: Vec<Stage> = if ctx.quick {
        vec![stage(20, 20.0), stage(30, 20.0), stage(5, 0.0)]
    } else {
        vec![stage(180, 1000.0), stage(60, 1000.0), stage(20, 0.0)]
    };
    let rec = Arc::new(Recorder::new());
    let users = ctx.users;
    ramping_vus(&rec, &stages, |vu, mut stop| {
        let (api, rec, user) = (ctx.api.clone(), rec.clone(), username(vu as usize % users));
        async move {
            loop {
                timed(&rec, "login", api.login(&user)).await;
                if !stop.think(Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    })
    .await;
    let snapshot = rec.snapshot();
    let verdicts = acceptance_criteria(Some("login")).iter().map(|t| t.judge(&snapshot)).collect();
    let peak = stages.iter().map(|s| s.target as u64).max().unwrap_or(0);
    Outcome {
        shape: format!(
            "ramping-vus: 0 → {peak} users over {}, held {}, down over {}; each user logs in, sleeps 1 s, repeats \
             ({} s of load in all).",
            human(stages[0].duration.as_secs()),
            human(stages[1].duration.as_secs()),
            human(stages[2].duration.as_secs()),
            total_duration(&stages).as_secs(),
        ),
        notes: vec![peak_note(&snapshot), breaking_point(&snapshot)],
        snapshot,
        verdicts,
        markers: Vec::new(),
    }
}

/// The best 10-second average of successful logins per second.
fn peak_note(snapshot: &Snapshot) -> String {
    let seconds = snapshot.seconds();
    let best = (0..seconds.saturating_sub(10))
        .map(|from| {
            let w = snapshot.window(Some("login"), from, from + 10);
            (w.requests - w.failed) as f64 / 10.0
        })
        .fold(0.0, f64::max);
    format!("Peak login throughput: **{best:.1} successful logins/s** (best 10-second window).")
}

/// The first second in which logins missed the acceptance criteria, and the load then.
fn breaking_point(snapshot: &Snapshot) -> String {
    let Some(login) = snapshot.names.get("login") else {
        return "No logins were recorded.".into();
    };
    let breach =
        login.seconds.iter().enumerate().find(|(_, s)| s.requests > 0 && (s.percentile_ms(95.0) >= 500.0 || s.failed_rate() >= 0.001));
    match breach {
        None => "Logins met p95 < 500 ms and < 0.1% errors in every second of the run.".into(),
        Some((second, s)) => {
            let vus = snapshot.vus.get(second).copied().unwrap_or(0);
            let before = snapshot.window(Some("login"), second.saturating_sub(10), second);
            let rate = (before.requests - before.failed) as f64 / 10f64.min(second.max(1) as f64);
            format!(
                "First second outside the criteria: **t = {second} s, at {vus} concurrent users**, \
                 {rate:.1} successful logins/s in the 10 s before it (that second: p95 {:.0} ms, {:.1}% failed).",
                s.percentile_ms(95.0),
                s.failed_rate() * 100.0
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaking_point_is_the_first_second_outside_the_criteria() {
        let rec = Recorder::new();
        for second in 0..20u64 {
            let at = rec.started() + Duration::from_secs(second);
            for i in 0..100 {
                let outcome = if second >= 12 && i % 2 == 0 { Err("status 503".to_string()) } else { Ok(()) };
                rec.record("login", at, outcome);
            }
        }
        let note = breaking_point(&rec.snapshot());
        assert!(note.contains("t = 12 s"), "{note}");
        assert!(peak_note(&rec.snapshot()).contains("100.0 successful logins/s"));

        let calm = Recorder::new();
        calm.record("login", calm.started(), Ok(()));
        assert!(breaking_point(&calm.snapshot()).contains("in every second"));
    }
}
