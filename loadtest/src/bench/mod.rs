//! The backend benchmark (`quantaid-loadtest bench`, run by `scripts/bench.sh`): one
//! command that starts PostgreSQL and the release backend, seeds them, and measures
//!
//! 1. the argon2id ceiling (hashes/s in-process, one thread per core, no HTTP),
//! 2. password logins (`POST /v1/auth/login`),
//! 3. `client_credentials` token issuance (`POST /oauth/token`),
//! 4. uncached introspection (`POST /oauth/introspect`),
//!
//! each for a fixed time at a fixed concurrency, in a closed loop. All traffic goes to
//! 127.0.0.1. Progress goes to stderr; the results go to stdout (`report::table`).

pub mod ceiling;
pub mod cpu;
mod options;
mod stack;

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use rand::RngCore;

pub use self::options::{Options, USAGE};
use self::stack::{Backend, Database};
use crate::client::Api;
use crate::executor::closed_loop;
use crate::machine;
use crate::report::table::{self, Conditions, Row};
use crate::seed;

/// Runs the benchmark; Ctrl-C or SIGTERM stops it, and the backend with it.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = bench(options) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}

async fn bench(o: Options) -> anyhow::Result<()> {
    let cores = machine::cores();
    // The backend's default: one argon2 worker per core.
    let hash_workers = cores;
    let load_before = machine::load_average();

    eprintln!("[bench] preparing PostgreSQL...");
    let db = Database::open(&o).await?;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let admin_token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let bin = match &o.backend_bin {
        Some(p) => p.clone(),
        None => stack::default_backend_bin()?,
    };
    eprintln!("[bench] starting {} ...", bin.display());
    let backend = Backend::start(&bin, &db, &admin_token, &o, hash_workers).await?;
    eprintln!("[bench] backend ready at {} (log: {})", backend.url, backend.log.display());

    let api = Api::new(&backend.url)?;
    // Names unique per run, so that a database given with --database-url can be reused.
    let run_id = format!("bench-{:x}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis());
    let t = Instant::now();
    let name = |i: usize| format!("{run_id}-{i}");
    seed::users(&api, &admin_token, &seed::connect(&db.config()).await?, o.users, name).await?;
    let users: Arc<[String]> = (0..o.users).map(name).collect();
    eprintln!("[bench] seeded {} users in {:.1} s", users.len(), t.elapsed().as_secs_f64());
    let client = Arc::new(seed::clients(&api, &admin_token, &run_id, 1).await?.remove(0));
    let t = Instant::now();
    let tokens: Arc<[String]> = seed::tokens(&api, &client, o.tokens).await?.into();
    eprintln!("[bench] pre-issued {} tokens in {:.1} s", tokens.len(), t.elapsed().as_secs_f64());

    let mut rows = Vec::new();
    let secs = (o.warmup + o.duration).as_secs();
    let pids = cpu::Pids { backend: backend.pid(), postmaster: db.postmaster };

    // (a) The ceiling runs while the backend is idle, on plain OS threads.
    eprintln!("[bench] argon2id ceiling on {cores} threads ({secs} s)...");
    let (warmup, duration) = (o.warmup, o.duration);
    let before = cpu::snapshot(pids);
    let sample = tokio::task::spawn_blocking(move || ceiling::measure(cores, warmup, duration)).await?;
    let cpu = cpu::usage(&before, &cpu::snapshot(pids));
    rows.push(Row { scenario: "argon2id ceiling", target: "in-process, no HTTP", concurrency: cores, sample, cpu });

    // (b) Logins rotate through the seeded users. Only failures count towards the
    // per-account throttle, and every login here succeeds, so it never trips.
    eprintln!("[bench] login at concurrency {} ({secs} s)...", o.login_concurrency);
    let (a, u) = (api.clone(), users.clone());
    let before = cpu::snapshot(pids);
    let sample = closed_loop(o.login_concurrency, o.warmup, o.duration, move |n| {
        let (api, users) = (a.clone(), u.clone());
        async move { api.login(&users[n as usize % users.len()]).await.map(|_session| ()) }
    })
    .await;
    let cpu = cpu::usage(&before, &cpu::snapshot(pids));
    rows.push(Row { scenario: "login", target: "POST /v1/auth/login", concurrency: o.login_concurrency, sample, cpu });

    // (c) A new token, and so a new row, per request.
    eprintln!("[bench] client_credentials at concurrency {} ({secs} s)...", o.concurrency);
    let (a, c) = (api.clone(), client.clone());
    let before = cpu::snapshot(pids);
    let sample = closed_loop(o.concurrency, o.warmup, o.duration, move |_| {
        let (api, client) = (a.clone(), c.clone());
        async move { api.issue(&client).await.map(|_token| ()) }
    })
    .await;
    let cpu = cpu::usage(&before, &cpu::snapshot(pids));
    rows.push(Row { scenario: "client_credentials", target: "POST /oauth/token", concurrency: o.concurrency, sample, cpu });

    // (d) Introspection straight at the backend: every request reads Postgres.
    eprintln!("[bench] introspection at concurrency {} ({secs} s)...", o.concurrency);
    let (a, c, tk) = (api.clone(), client.clone(), tokens.clone());
    let before = cpu::snapshot(pids);
    let sample = closed_loop(o.concurrency, o.warmup, o.duration, move |n| {
        let (api, client, tokens) = (a.clone(), c.clone(), tk.clone());
        async move {
            // A live token reported inactive would be a wrong answer, not a slow one.
            match api.introspect(&client, &tokens[n as usize % tokens.len()]).await? {
                true => Ok(()),
                false => Err("inactive token".to_string()),
            }
        }
    })
    .await;
    let cpu = cpu::usage(&before, &cpu::snapshot(pids));
    let target = "POST /oauth/introspect";
    rows.push(Row { scenario: "introspect (uncached)", target, concurrency: o.concurrency, sample, cpu });

    let ceiling_rate = rows[0].sample.throughput();
    let login_pct = (ceiling_rate > 0.0).then(|| rows[1].sample.throughput() / ceiling_rate * 100.0);
    let conditions = Conditions {
        cores,
        cpu_model: machine::cpu_model(),
        kernel: machine::kernel(),
        duration: o.duration,
        warmup: o.warmup,
        pool_min: o.pool_min,
        pool_max: o.pool_max,
        hash_workers,
        users: users.len(),
        tokens: tokens.len(),
        postgres: db.settings.clone(),
        load_before,
    };
    table::print(&conditions, &rows, login_pct);
    let (logged, log) = (backend.log_lines(), backend.log.clone());
    drop(backend);
    if logged > 0 {
        eprintln!("[bench] the backend logged {logged} warning/error lines: {}", log.display());
    } else {
        let _ = std::fs::remove_file(&log);
    }
    eprintln!("[bench] backend stopped");
    Ok(())
}
