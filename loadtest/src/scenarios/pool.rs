//! Database connection pool exhaustion (`TestDatabaseConnectionPoolExhaustion` in docs/design.md).
//!
//! The stack runs with a small pool (`loadtest/run.sh` sets 4 connections and a 500 ms
//! pool wait, in the environment this process shares). Token grants arrive at a steady rate in three phases: normal; slow, where
//! a trigger makes every token insert sleep 500 ms so the pool's connections are all
//! held and requests queue for them; and recovered, after the trigger is dropped. Shed
//! requests must get a quick `503 temporarily_unavailable` with `Retry-After` — never a
//! hang or a 500 — and service must come back by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::NoTls;

use super::{human, Ctx, Outcome};
use crate::charts::Marker;
use crate::client::{OAuthClient, TokenAnswer};
use crate::executor::{arrival_rate, stage};
use crate::metrics::{Recorder, Snapshot};
use crate::thresholds::{Metric, Threshold, Unit::Ratio, Verdict};

const RATE: f64 = 100.0;
const SLOW_QUERY_MS: u32 = 500;
/// How long after the slow queries stop the service may take to answer normally again.
const RECOVERY_GRACE_SECS: usize = 5;

/// Makes every token insert sleep, through a trigger; dropped again on [`SlowQueries::stop`].
struct SlowQueries(tokio_postgres::Client);

impl SlowQueries {
    async fn start(database_url: &str) -> anyhow::Result<SlowQueries> {
        let (db, connection) = tokio_postgres::connect(database_url, NoTls).await.context("connecting to PostgreSQL")?;
        tokio::spawn(connection);
        db.batch_execute(&format!(
            "CREATE OR REPLACE FUNCTION loadtest_slow_insert() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep({}); RETURN NEW; END $$;
             CREATE OR REPLACE TRIGGER loadtest_slow_insert BEFORE INSERT ON oauth_tokens
               FOR EACH ROW EXECUTE FUNCTION loadtest_slow_insert();",
            SLOW_QUERY_MS as f64 / 1000.0
        ))
        .await
        .context("installing the slow-insert trigger")?;
        Ok(SlowQueries(db))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.0
            .batch_execute(
                "DROP TRIGGER IF EXISTS loadtest_slow_insert ON oauth_tokens;
                 DROP FUNCTION IF EXISTS loadtest_slow_insert();",
            )
            .await
            .context("dropping the slow-insert trigger")
    }
}

struct Phase {
    name: &'static str,
    from: usize,
    to: usize,
}

pub async fn exhaustion(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let (normal, slow, recovered) = if ctx.quick { (15, 20, 20) } else { (30, 60, 60) };
    let rec = Arc::new(Recorder::new());
    let clients: Arc<[OAuthClient]> = ctx.clients.clone().into();
    let api = ctx.api.clone();
    let stages = [stage(normal + slow + recovered, RATE)];
    let load = arrival_rate(&rec, RATE, &stages, 1000, |n, scheduled: Instant| {
        let (api, rec, clients) = (api.clone(), rec.clone(), clients.clone());
        async move {
            let client = &clients[n as usize % clients.len()];
            match api.token(client).await {
                Ok(TokenAnswer::Issued) => rec.record("token", scheduled, Ok(())),
                Ok(TokenAnswer::Shed) => rec.record("token-503", scheduled, Ok(())),
                Err(e) => rec.record("token", scheduled, Err(e)),
            }
        }
    });
    let antagonist = async {
        tokio::time::sleep(Duration::from_secs(normal)).await;
        let on = rec.elapsed_secs();
        let slow_queries = SlowQueries::start(&ctx.database_url).await?;
        tokio::time::sleep(Duration::from_secs(slow)).await;
        let off = rec.elapsed_secs();
        slow_queries.stop().await?;
        anyhow::Ok((on, off))
    };
    let ((), phases) = tokio::join!(load, antagonist);
    let (on, off) = phases?;
    let snapshot = rec.snapshot();

    let phases = [
        Phase { name: "normal", from: 0, to: on.floor() as usize },
        Phase { name: "slow queries", from: on.ceil() as usize, to: off.floor() as usize },
        Phase { name: "recovered", from: off.ceil() as usize, to: snapshot.seconds() },
    ];
    let mut verdicts = vec![
        // Anything but a 200 or a well-formed 503 (a 500, a hang, a bare 503) fails.
        Threshold { metric: Metric::FailedRate { name: None }, limit: 0.001 }.judge(&snapshot),
        // Shedding is quick: a 503 comes after the pool wait, not after a timeout.
        Threshold { metric: Metric::Duration { name: Some("token-503"), percentile: 99.0 }, limit: 1000.0 }.judge(&snapshot),
    ];
    verdicts.extend(phase_checks(&snapshot, &phases));
    let recovery = recovery_secs(&snapshot, phases[2].from);
    Ok(Outcome {
        shape: format!(
            "constant-arrival-rate: {RATE} client_credentials grants/s for {} (normal {}, every token insert \
             slowed by {SLOW_QUERY_MS} ms for {}, then normal again for {}); backend pool of {} connections \
             with a {} ms wait.",
            human(normal + slow + recovered),
            human(normal),
            human(slow),
            human(recovered),
            backend_setting("QUANTAID_DB_POOL_MAX", "100"),
            backend_setting("QUANTAID_DB_POOL_WAIT_MS", "2000"),
        ),
        notes: vec![phase_table(&snapshot, &phases), recovery_note(recovery)],
        markers: vec![Marker { at_secs: on, label: "slow queries on".into() }, Marker { at_secs: off, label: "slow queries off".into() }],
        snapshot,
        verdicts,
    })
}

/// The backend's setting as `loadtest/run.sh` started it (the same environment).
fn backend_setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn shed_share(snapshot: &Snapshot, p: &Phase) -> f64 {
    let shed = snapshot.window(Some("token-503"), p.from, p.to).requests;
    let all = snapshot.window(None, p.from, p.to).requests;
    if all == 0 {
        0.0
    } else {
        shed as f64 / all as f64
    }
}

/// The pool really ran out while queries were slow (otherwise the test proved nothing),
/// and no request was shed while they were not.
fn phase_checks(snapshot: &Snapshot, phases: &[Phase; 3]) -> Vec<Verdict> {
    let [normal, slow, recovered] = phases;
    let after_grace = Phase { name: "recovered", from: recovered.from + RECOVERY_GRACE_SECS, to: recovered.to };
    let (before, during, after) = (shed_share(snapshot, normal), shed_share(snapshot, slow), shed_share(snapshot, &after_grace));
    vec![
        Verdict::new("503 share before the slow queries == 0", before, Ratio, before == 0.0),
        Verdict::new("503 share during the slow queries > 0.5", during, Ratio, during > 0.5),
        Verdict::new(format!("503 share from {RECOVERY_GRACE_SECS} s after the slow queries == 0"), after, Ratio, after == 0.0),
    ]
}

/// Seconds from the end of the slow queries to the last shed request.
fn recovery_secs(snapshot: &Snapshot, from: usize) -> Option<usize> {
    let shed = snapshot.names.get("token-503")?;
    let last = (from..shed.seconds.len()).rev().find(|&s| shed.seconds[s].requests > 0)?;
    Some(last + 1 - from)
}

fn recovery_note(recovery: Option<usize>) -> String {
    match recovery {
        None => "Recovery: no request was shed once the slow queries stopped.".into(),
        Some(s) => format!("Recovery: the last 503 came within {s} s of the slow queries stopping; no restart."),
    }
}

fn phase_table(snapshot: &Snapshot, phases: &[Phase; 3]) -> String {
    let mut t = String::from(
        "| phase | seconds | 200/s | 503/s | other failures | 200 p50 / p99 ms | 503 p50 / p99 / max ms |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in phases {
        let ok = snapshot.window(Some("token"), p.from, p.to);
        let shed = snapshot.window(Some("token-503"), p.from, p.to);
        let secs = (p.to.saturating_sub(p.from)).max(1) as f64;
        t.push_str(&format!(
            "| {} | {}–{} | {:.1} | {:.1} | {} | {:.1} / {:.1} | {:.1} / {:.1} / {:.1} |\n",
            p.name,
            p.from,
            p.to,
            (ok.requests - ok.failed) as f64 / secs,
            shed.requests as f64 / secs,
            ok.failed,
            ok.percentile_ms(50.0),
            ok.percentile_ms(99.0),
            shed.percentile_ms(50.0),
            shed.percentile_ms(99.0),
            shed.max_ms(),
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 10 requests a second for 30 s: shed ones in `shed_seconds`, issued ones elsewhere.
    fn run(shed_seconds: impl Fn(u64) -> bool) -> Snapshot {
        let rec = Recorder::new();
        for second in 0..30 {
            let at = rec.started() + Duration::from_secs(second);
            for _ in 0..10 {
                rec.record(if shed_seconds(second) { "token-503" } else { "token" }, at, Ok(()));
            }
        }
        rec.snapshot()
    }

    fn phases() -> [Phase; 3] {
        [
            Phase { name: "normal", from: 0, to: 10 },
            Phase { name: "slow queries", from: 10, to: 20 },
            Phase { name: "recovered", from: 20, to: 30 },
        ]
    }

    #[test]
    fn passes_only_when_the_pool_ran_out_and_came_back() {
        let shed_while_slow = run(|s| (10..20).contains(&s));
        assert!(phase_checks(&shed_while_slow, &phases()).iter().all(|v| v.ok));
        // Shedding that goes on into the grace period is a recovery; after it, a failure.
        let slow_recovery = run(|s| (10..23).contains(&s));
        assert!(phase_checks(&slow_recovery, &phases()).iter().all(|v| v.ok));
        assert_eq!(recovery_secs(&slow_recovery, 20), Some(3));
        let no_recovery = run(|s| s >= 10);
        assert!(!phase_checks(&no_recovery, &phases())[2].ok);
        // A pool that never ran out proves nothing.
        let never_shed = run(|_| false);
        assert!(!phase_checks(&never_shed, &phases())[1].ok);
        assert_eq!(recovery_secs(&never_shed, 20), None);
        let shed_too_early = run(|s| s == 3 || (10..20).contains(&s));
        assert!(!phase_checks(&shed_too_early, &phases())[0].ok);
    }
}
