//! `chaos`: the steady load a chaos experiment (chaos/run.sh, docs/chaos.md) runs under,
//! and the revocation check it exists for.
//!
//! - **Load**: an open model (k6 `constant-arrival-rate`) of session lookups, forward-auth
//!   checks and token introspections (the cached paths), with a few logins and token
//!   grants, spread round-robin over every target (proxy replica).
//! - **Revocations throughout**: revokers issue a token or log a user in, make every
//!   target cache it, then revoke it (`/oauth/revoke`, logout, logout-all) through one
//!   target, and as soon as that answers 2xx look it up on *every* target, at once and a
//!   little later. Any "active" answer then is `stale_active`, the number that must be 0.
//!   A `503` + `Retry-After` is retried until 2xx and counted as `deferred`.
//! - **Phases**: the experiment appends `<unix ms> <name>` lines to the events file when
//!   it breaks or repairs something; each line starts a phase, and every figure is also
//!   given per phase in `chaos.json` (the keys chaos/run.sh documents).
//!
//! Settings (environment, set by chaos/lib/load.sh): LOADTEST_TARGETS (comma-separated
//! base URLs; default LOADTEST_BASE_URL), LOADTEST_CHAOS_SECS, LOADTEST_CHAOS_RATE,
//! LOADTEST_CHAOS_EVENTS, LOADTEST_CHAOS_READY (a file created once the measured load
//! runs), LOADTEST_CHAOS_JSON (where chaos.json goes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

use super::{human, Ctx, Outcome};
use crate::charts::Marker;
use crate::client::{Api, OAuthClient, Revoked, Session};
use crate::executor::{arrival_rate, stage};
use crate::metrics::{Recorder, Snapshot, Stats};
use crate::seed::username;
use crate::thresholds::{Unit, Verdict};

const MAX_VUS: usize = 1000;
/// Sessions and tokens the steady load looks up (never revoked).
const POOL: usize = 40;
/// Revocation cycles run this many at a time, each pausing this long between cycles.
const REVOKERS: usize = 2;
const REVOKER_PAUSE: Duration = Duration::from_millis(150);
/// After a 2xx revocation, every target is asked at once and again after these delays.
const PROBE_AFTER: [Duration; 3] = [Duration::ZERO, Duration::from_millis(100), Duration::from_millis(500)];
/// A revocation answered 503 is retried this often, for at most this long.
const RETRY_EVERY: Duration = Duration::from_millis(250);
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Request names; `lookup` in chaos.json is the first three together: the steady load's
/// lookups of the pool, all cached before the measurement starts. `fill` is a revoker's
/// first lookup of a credential it just created (a cache miss, so it needs the database).
const LOOKUPS: [&str; 3] = ["session", "check", "introspect"];
const NAMES: [&str; 10] = ["session", "check", "introspect", "token", "login", "revoke", "logout", "logout_all", "probe", "fill"];

struct Settings {
    targets: Vec<Api>,
    secs: u64,
    rate: f64,
    events: Option<String>,
    ready: Option<String>,
    json: Option<String>,
}

fn settings(ctx: &Ctx) -> anyhow::Result<Settings> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let targets = match var("LOADTEST_TARGETS") {
        Some(list) => list.split(',').map(|u| Api::new(u.trim())).collect::<anyhow::Result<Vec<_>>>()?,
        None => vec![ctx.api.clone()],
    };
    let secs = var("LOADTEST_CHAOS_SECS").map_or(Ok(if ctx.quick { 30 } else { 120 }), |v| v.parse()).context("LOADTEST_CHAOS_SECS")?;
    let rate = var("LOADTEST_CHAOS_RATE").map_or(Ok(150.0), |v| v.parse()).context("LOADTEST_CHAOS_RATE")?;
    Ok(Settings {
        targets,
        secs,
        rate,
        events: var("LOADTEST_CHAOS_EVENTS"),
        ready: var("LOADTEST_CHAOS_READY"),
        json: var("LOADTEST_CHAOS_JSON"),
    })
}

/// Counts of the revocation check.
#[derive(Default)]
struct Counts {
    /// Revocations answered 2xx and then probed on every target.
    revocations: AtomicU64,
    probes: AtomicU64,
    /// Probes answered "active" after the revocation returned 2xx.
    stale_active: AtomicU64,
    /// 503 + Retry-After answers to revocations (retried).
    deferred: AtomicU64,
    /// Logouts whose first attempt answered 503 and whose retry found the session gone:
    /// never acknowledged, so not probed.
    unacknowledged: AtomicU64,
}

struct Shared {
    targets: Vec<Api>,
    clients: Vec<OAuthClient>,
    rec: Arc<Recorder>,
    counts: Counts,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let s = settings(ctx)?;
    anyhow::ensure!(ctx.users > POOL + 100, "the chaos scenario needs more than {} users", POOL + 100);
    // Unmeasured set-up: the looked-up pool, cached on every target.
    let mut sessions = Vec::new();
    for i in 1..=POOL {
        sessions.push(ctx.api.login(&username(i)).await.map_err(|e| anyhow::anyhow!("login: {e}"))?);
    }
    let mut tokens = Vec::new();
    for i in 0..POOL {
        let client = ctx.clients[i % ctx.clients.len()].clone();
        let token = ctx.api.issue(&client).await.map_err(|e| anyhow::anyhow!("token: {e}"))?;
        tokens.push((client, token));
    }
    for api in &s.targets {
        for (session, (client, token)) in sessions.iter().zip(&tokens) {
            let _ = api.session(session).await;
            let _ = api.introspect(client, token).await;
        }
    }
    let sessions: Arc<[Session]> = sessions.into();
    let tokens: Arc<[(OAuthClient, String)]> = tokens.into();

    let shared = Arc::new(Shared {
        targets: s.targets.clone(),
        clients: ctx.clients.clone(),
        rec: Arc::new(Recorder::new()),
        counts: Counts::default(),
    });
    let started_ms = unix_ms(SystemTime::now());
    if let Some(ready) = &s.ready {
        std::fs::write(ready, started_ms.to_string()).with_context(|| format!("writing {ready}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(s.secs);
    let revokers: Vec<_> = (0..REVOKERS).map(|r| tokio::spawn(revoker(shared.clone(), r, ctx.users, deadline))).collect();
    let clients: Arc<[OAuthClient]> = ctx.clients.clone().into();
    let users = ctx.users;
    let rec = shared.rec.clone();
    arrival_rate(&rec, s.rate, &[stage(s.secs, s.rate)], MAX_VUS, |n, scheduled| {
        let (shared, sessions, tokens, clients) = (shared.clone(), sessions.clone(), tokens.clone(), clients.clone());
        async move { steady_request(&shared, n, scheduled, &sessions, &tokens, &clients, users).await }
    })
    .await;
    for r in revokers {
        let _ = r.await;
    }

    let snapshot = shared.rec.snapshot();
    let phases = read_phases(s.events.as_deref(), started_ms, snapshot.seconds())?;
    let c = &shared.counts;
    let (stale, revocations, probes, deferred, unacked) = (
        c.stale_active.load(Ordering::Relaxed),
        c.revocations.load(Ordering::Relaxed),
        c.probes.load(Ordering::Relaxed),
        c.deferred.load(Ordering::Relaxed),
        c.unacknowledged.load(Ordering::Relaxed),
    );
    let mut figures = figures(&snapshot, &phases);
    figures.insert("stale_active".into(), json!(stale));
    figures.insert("revocations".into(), json!(revocations));
    figures.insert("probes".into(), json!(probes));
    figures.insert("deferred".into(), json!(deferred));
    figures.insert("unacknowledged".into(), json!(unacked));
    figures.insert("dropped".into(), json!(snapshot.dropped_iterations));
    figures.insert("rate".into(), json!(s.rate));
    figures.insert("duration_s".into(), json!(s.secs));
    figures.insert("targets".into(), json!(s.targets.len()));
    figures.insert("failures".into(), json!(snapshot.total(None).failures));
    if let Some(path) = &s.json {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(figures.into_iter().collect()))?)
            .with_context(|| format!("writing {path}"))?;
    }

    let markers = phases.iter().skip(1).map(|p| Marker { at_secs: p.from as f64, label: p.name.clone() }).collect();
    let notes = vec![
        phase_table(&snapshot, &phases),
        format!(
            "Revocations acknowledged (2xx) and then looked up on all {} targets: {revocations}; \
             lookups after the acknowledgement: {probes}; answered \"active\": **{stale}**. \
             Revocations answered `503` + `Retry-After` (retried until 2xx): {deferred}; \
             logouts never acknowledged (503, then the session was already gone): {unacked}.",
            s.targets.len()
        ),
    ];
    let verdicts = vec![Verdict::new("revoked credentials answered active after a 2xx revocation", stale as f64, Unit::Count, stale == 0)];
    Ok(Outcome {
        shape: format!(
            "constant-arrival-rate: {} requests/s for {} over {} targets (round-robin): session lookups 40%, \
             forward-auth checks 25%, introspections 32%, token grants 2.5%, logins 0.5% (up to {MAX_VUS} in flight); \
             plus {REVOKERS} revokers cycling token revocation, logout and logout-all: each new credential is looked up \
             on every target (`fill`), revoked, then looked up on every target again (`probe`).",
            s.rate,
            human(s.secs),
            s.targets.len()
        ),
        snapshot,
        verdicts,
        markers,
        notes,
    })
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One steady-load request: which kind and which target follow from its number.
async fn steady_request(
    shared: &Shared,
    n: u64,
    scheduled: Instant,
    sessions: &[Session],
    tokens: &[(OAuthClient, String)],
    clients: &[OAuthClient],
    users: usize,
) {
    let api = &shared.targets[n as usize % shared.targets.len()];
    let pick = (n / shared.targets.len() as u64) as usize;
    let rec = &shared.rec;
    // Out of 200: 80 session lookups, 50 checks, 64 introspections, 5 grants, 1 login
    // (a login costs a full argon2 hash; the revokers log in as well).
    match n % 200 {
        0..=79 => {
            let outcome = api.session(&sessions[pick % sessions.len()]).await;
            rec.record("session", scheduled, outcome);
        }
        80..=129 => {
            let outcome = api.check(&sessions[pick % sessions.len()]).await;
            rec.record("check", scheduled, outcome);
        }
        130..=193 => {
            let (client, token) = &tokens[pick % tokens.len()];
            let outcome = match api.introspect(client, token).await {
                Ok(true) => Ok(()),
                Ok(false) => Err("valid token inactive".into()),
                Err(e) => Err(e),
            };
            rec.record("introspect", scheduled, outcome);
        }
        194..=198 => {
            let outcome = api.issue(&clients[pick % clients.len()]).await.map(|_| ());
            rec.record("token", scheduled, outcome);
        }
        _ => {
            // Users POOL+1 .. users/2: never revoked, never the revokers' users.
            let user = POOL + 1 + pick % (users / 2 - POOL - 1);
            let outcome = api.login(&username(user)).await.map(|_| ());
            rec.record("login", scheduled, outcome);
        }
    }
}

/// Revocation cycles until `deadline`: token, logout, logout-all in turn, through
/// rotating targets, each probed on every target once acknowledged.
async fn revoker(shared: Arc<Shared>, id: usize, users: usize, deadline: Instant) {
    let mut cycle = 0usize;
    // The revokers' users: the upper half, split between revokers so that a
    // logout-all of one cannot end another's session.
    let half = users / 2;
    let span = (users - half) / REVOKERS;
    while Instant::now() < deadline {
        let via = (cycle + id) % shared.targets.len();
        let user = username(half + id * span + cycle % span);
        match cycle % 3 {
            0 => token_cycle(&shared, via, cycle).await,
            1 => session_cycle(&shared, via, &user, false).await,
            _ => session_cycle(&shared, via, &user, true).await,
        }
        cycle += 1;
        tokio::time::sleep(REVOKER_PAUSE).await;
    }
}

/// Retries `attempt` while it answers 503 + Retry-After; what it finally said.
async fn acknowledged<F, Fut>(shared: &Shared, name: &'static str, mut attempt: F) -> Option<Revoked>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Revoked, String>>,
{
    let give_up = Instant::now() + RETRY_FOR;
    loop {
        let start = Instant::now();
        match attempt().await {
            Ok(Revoked::RetryLater) if Instant::now() < give_up => {
                shared.counts.deferred.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Ok(Revoked::RetryLater) => {
                shared.rec.record(name, start, Err(format!("still 503 after {} s", RETRY_FOR.as_secs())));
                return None;
            }
            Ok(answer) => {
                shared.rec.record(name, start, Ok(()));
                return Some(answer);
            }
            Err(e) => {
                shared.rec.record(name, start, Err(e));
                return None;
            }
        }
    }
}

async fn token_cycle(shared: &Shared, via: usize, cycle: usize) {
    let client = &shared.clients[cycle % shared.clients.len()];
    let start = Instant::now();
    let token = match shared.targets[via].issue(client).await {
        Ok(t) => {
            shared.rec.record("token", start, Ok(()));
            t
        }
        Err(e) => return shared.rec.record("token", start, Err(e)),
    };
    // Every target caches it.
    for api in &shared.targets {
        let start = Instant::now();
        let outcome = api.introspect(client, &token).await.and_then(|a| if a { Ok(()) } else { Err("new token inactive".into()) });
        shared.rec.record("fill", start, outcome);
    }
    let revoked = acknowledged(shared, "revoke", || shared.targets[via].revoke(client, &token)).await;
    if revoked == Some(Revoked::Done) {
        shared.counts.revocations.fetch_add(1, Ordering::Relaxed);
        probe(shared, |api| {
            let (client, token) = (client.clone(), token.clone());
            async move { api.introspect(&client, &token).await }
        })
        .await;
    }
}

async fn session_cycle(shared: &Shared, via: usize, user: &str, all: bool) {
    let api = &shared.targets[via];
    let mut sessions = Vec::new();
    for _ in 0..if all { 2 } else { 1 } {
        let start = Instant::now();
        match api.login(user).await {
            Ok(s) => {
                shared.rec.record("login", start, Ok(()));
                sessions.push(s);
            }
            Err(e) => return shared.rec.record("login", start, Err(e)),
        }
    }
    for target in &shared.targets {
        for session in &sessions {
            let start = Instant::now();
            let outcome = target.session_valid(session).await.and_then(|v| if v { Ok(()) } else { Err("new session invalid".into()) });
            shared.rec.record("fill", start, outcome);
        }
    }
    let name = if all { "logout_all" } else { "logout" };
    let mut first = true;
    let answer = acknowledged(shared, name, || {
        // A retried logout may find its session already ended by the first attempt.
        let was_first = std::mem::replace(&mut first, false);
        let session = &sessions[0];
        async move {
            match api.end_sessions(session, all).await {
                Ok(Revoked::AlreadyGone) if was_first => Err("status 401 for a live session".into()),
                other => other,
            }
        }
    })
    .await;
    match answer {
        Some(Revoked::Done) => {
            shared.counts.revocations.fetch_add(1, Ordering::Relaxed);
            for session in &sessions {
                probe(shared, |api| {
                    let session = Session { token: session.token.clone(), user_id: session.user_id.clone() };
                    async move { api.session_valid(&session).await }
                })
                .await;
            }
        }
        Some(Revoked::AlreadyGone) => {
            shared.counts.unacknowledged.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Asks every target whether the revoked credential is still valid, now and after the
/// `PROBE_AFTER` delays; "valid" is `stale_active`.
async fn probe<F, Fut>(shared: &Shared, ask: F)
where
    F: Fn(Api) -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let acknowledged_at = Instant::now();
    for delay in PROBE_AFTER {
        tokio::time::sleep_until((acknowledged_at + delay).into()).await;
        for api in &shared.targets {
            let start = Instant::now();
            shared.counts.probes.fetch_add(1, Ordering::Relaxed);
            let outcome = match ask(api.clone()).await {
                Ok(false) => Ok(()),
                Ok(true) => {
                    shared.counts.stale_active.fetch_add(1, Ordering::Relaxed);
                    Err("active after revocation".into())
                }
                Err(e) => Err(e),
            };
            shared.rec.record("probe", start, outcome);
        }
    }
}

/// A phase of the experiment: seconds `from..to` of the measured run.
struct Phase {
    name: String,
    from: usize,
    to: usize,
}

/// Phases from the events file (`<unix ms> <name>` per line); the first is `before`.
fn read_phases(path: Option<&str>, started_ms: u64, seconds: usize) -> anyhow::Result<Vec<Phase>> {
    let mut starts = vec![(0usize, "before".to_string())];
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let Some((ms, name)) = line.split_once(' ') else { continue };
            let ms: u64 = ms.trim().parse().with_context(|| format!("{path}: bad line {line:?}"))?;
            let at = (ms.saturating_sub(started_ms) / 1000) as usize;
            starts.push((at.min(seconds), name.trim().to_string()));
        }
    }
    Ok(starts
        .iter()
        .enumerate()
        .map(|(i, (from, name))| Phase { name: name.clone(), from: *from, to: starts.get(i + 1).map_or(seconds, |next| next.0) })
        .collect())
}

/// Requests of the names in `names` (all with an empty slice) in seconds `from..to`.
fn window(snapshot: &Snapshot, names: &[&str], from: usize, to: usize) -> Stats {
    if names.is_empty() {
        return snapshot.window(None, from, to);
    }
    let mut out = snapshot.window(Some(names[0]), from, to);
    for name in &names[1..] {
        out.add(&snapshot.window(Some(name), from, to));
    }
    out
}

/// chaos.json's numbers: requests, failed, p50/p95/p99/max for everything, per name,
/// for `lookup`, and each of those per phase (`KEY`, `KEY:NAME`, `KEY@PHASE`, `KEY:NAME@PHASE`).
fn figures(snapshot: &Snapshot, phases: &[Phase]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut groups: Vec<(String, Vec<&str>)> = vec![(String::new(), vec![]), (":lookup".into(), LOOKUPS.to_vec())];
    groups.extend(NAMES.iter().map(|n| (format!(":{n}"), vec![*n])));
    let mut scopes = vec![(String::new(), 0, snapshot.seconds())];
    scopes.extend(phases.iter().map(|p| (format!("@{}", p.name), p.from, p.to)));
    for (suffix, names) in &groups {
        for (scope, from, to) in &scopes {
            let stats = window(snapshot, names, *from, *to);
            let key = |k: &str| format!("{k}{suffix}{scope}");
            out.insert(key("requests"), json!(stats.requests));
            out.insert(key("failed"), json!(stats.failed));
            if stats.requests > 0 {
                for (k, p) in [("p50_ms", 50.0), ("p95_ms", 95.0), ("p99_ms", 99.0)] {
                    out.insert(key(k), json!(round(stats.percentile_ms(p))));
                }
                out.insert(key("max_ms"), json!(round(stats.max_ms())));
            }
        }
    }
    out
}

fn round(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// The per-phase table of the report.
fn phase_table(snapshot: &Snapshot, phases: &[Phase]) -> String {
    let mut t =
        String::from("| phase | seconds | requests | failed | lookups p50 / p95 / p99 (ms) | all p99 (ms) |\n|---|---|---|---|---|---|\n");
    for p in phases {
        let all = window(snapshot, &[], p.from, p.to);
        let lookups = window(snapshot, &LOOKUPS, p.from, p.to);
        t.push_str(&format!(
            "| {} | {}–{} | {} | {} | {:.1} / {:.1} / {:.1} | {:.1} |\n",
            p.name,
            p.from,
            p.to,
            all.requests,
            all.failed,
            lookups.percentile_ms(50.0),
            lookups.percentile_ms(95.0),
            lookups.percentile_ms(99.0),
            all.percentile_ms(99.0)
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_events_file() {
        let dir = std::env::temp_dir().join(format!("quantaid-chaos-phases-{}", std::process::id()));
        std::fs::write(&dir, "1000500 fault\n1004999 recovery\n").unwrap();
        let phases = read_phases(dir.to_str(), 1_000_000, 10).unwrap();
        let got: Vec<_> = phases.iter().map(|p| (p.name.as_str(), p.from, p.to)).collect();
        assert_eq!(got, vec![("before", 0, 0), ("fault", 0, 4), ("recovery", 4, 10)]);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn figures_are_keyed_by_name_and_phase() {
        let rec = Recorder::new();
        let t0 = Instant::now();
        rec.record("session", t0, Ok(()));
        rec.record("introspect", t0, Err("status 500".into()));
        rec.record("probe", t0, Ok(()));
        let snap = rec.snapshot();
        let phases = vec![Phase { name: "fault".into(), from: 0, to: 1 }];
        let f = figures(&snap, &phases);
        assert_eq!(f["requests"], json!(3));
        assert_eq!(f["failed"], json!(1));
        assert_eq!(f["requests:lookup"], json!(2));
        assert_eq!(f["failed:lookup@fault"], json!(1));
        assert_eq!(f["requests:probe@fault"], json!(1));
        assert!(f.contains_key("p99_ms:lookup@fault"));
        assert!(!f.contains_key("p99_ms:token"), "no percentile without requests");
    }
}
