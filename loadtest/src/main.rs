//! QuantaID's load tool, in two modes that share one client, seeder, tally and report:
//!
//! - `quantaid-loadtest <scenario> [--quick] --out DIR`: seeds the running stack, runs one
//!   load-test scenario against it, writes the report, and exits 1 when a criterion
//!   fails. `loadtest/run.sh` brings the stack up and down around it; see
//!   loadtest/README.md.
//! - `quantaid-loadtest bench [flags]`: the backend benchmark (`scripts/bench.sh`, see
//!   docs/benchmarks.md): starts PostgreSQL and the release backend itself, and prints
//!   throughput and latency per endpoint. `bench --help` lists the flags.
//!
//! Settings (environment, set by `loadtest/run.sh`):
//!   LOADTEST_BASE_URL      where clients go: the proxy (default http://127.0.0.1:8080)
//!   LOADTEST_DATABASE_URL  PostgreSQL, to seed users and to slow queries down
//!   LOADTEST_ADMIN_TOKEN   the backend's admin token, to create OAuth clients
//!   LOADTEST_USERS         users to seed (default 10000)
//!   LOADTEST_CLIENTS       OAuth clients to seed (default 20)
//!   LOADTEST_CONDITIONS    words about the stack, for the report

mod bench;
mod charts;
mod client;
mod executor;
mod machine;
mod metrics;
mod report;
mod scenarios;
mod seed;
mod thresholds;

use anyhow::{bail, Context};
use std::path::PathBuf;

use crate::client::Api;
use crate::scenarios::Ctx;

struct Args {
    scenario: String,
    quick: bool,
    out: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut scenario = None;
    let mut quick = false;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--out" => out = Some(PathBuf::from(args.next().context("--out needs a directory")?)),
            s if s.starts_with('-') => bail!("unknown option {s}"),
            s => scenario = Some(s.to_string()),
        }
    }
    let scenario = scenario.with_context(|| format!("name a scenario: {}", scenarios::NAMES.join(", ")))?;
    if !scenarios::NAMES.contains(&scenario.as_str()) {
        bail!("unknown scenario '{scenario}' (one of: {})", scenarios::NAMES.join(", "));
    }
    Ok(Args { scenario, quick, out: out.context("--out DIR is required")? })
}

fn env(name: &str, default: Option<&str>) -> anyhow::Result<String> {
    match (std::env::var(name), default) {
        (Ok(v), _) if !v.is_empty() => Ok(v),
        (_, Some(d)) => Ok(d.to_string()),
        _ => bail!("{name} is not set (loadtest/run.sh sets it)"),
    }
}

/// The machine, for the report: the load generator shares it with the whole stack.
fn machine() -> String {
    format!(
        "{} cores ({}), shared by the load generator, the proxy, the backend, PostgreSQL and Redis",
        machine::cores(),
        machine::cpu_model()
    )
}

async fn run(args: &Args) -> anyhow::Result<bool> {
    let api = Api::new(&env("LOADTEST_BASE_URL", Some("http://127.0.0.1:8080"))?)?;
    let database_url = env("LOADTEST_DATABASE_URL", None)?;
    let admin_token = env("LOADTEST_ADMIN_TOKEN", None)?;
    let users: usize = env("LOADTEST_USERS", Some("10000"))?.parse().context("LOADTEST_USERS")?;
    let client_count: usize = env("LOADTEST_CLIENTS", Some("20"))?.parse().context("LOADTEST_CLIENTS")?;

    eprintln!("==> seeding {users} users and {client_count} OAuth clients");
    let db = seed::connect(&database_url.parse::<tokio_postgres::Config>().context("LOADTEST_DATABASE_URL")?).await?;
    seed::users(&api, &admin_token, &db, users, seed::username).await?;
    let database = seed::database_settings(&db).await?;
    drop(db);
    let clients = seed::clients(&api, &admin_token, "loadtest", client_count).await?;

    let ctx = Ctx { api, users, clients, database_url, quick: args.quick };
    eprintln!("==> running {}{}", args.scenario, if args.quick { " (quick)" } else { "" });
    let started_utc = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let outcome = scenarios::run(&args.scenario, &ctx).await?;
    let mut conditions = format!("{}; {database}", machine());
    if let Ok(stack) = std::env::var("LOADTEST_CONDITIONS") {
        if !stack.is_empty() {
            conditions.push_str("; ");
            conditions.push_str(&stack);
        }
    }
    let info = report::RunInfo { scenario: &args.scenario, quick: args.quick, started_utc, conditions };
    let summary = report::write(&args.out, &info, &outcome)?;
    println!("{summary}");
    println!("report: {}", args.out.join("summary.md").display());
    Ok(outcome.passed())
}

fn main() {
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if std::env::args().nth(1).as_deref() == Some("bench") {
        std::process::exit(match bench::Options::parse(std::env::args().skip(2)) {
            Ok(None) => {
                print!("{}", bench::USAGE);
                0
            }
            Ok(Some(options)) => match runtime().block_on(bench::run(options)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("quantaid-loadtest bench: {e:#}");
                    1
                }
            },
            Err(e) => {
                eprintln!("quantaid-loadtest bench: {e:#}");
                2
            }
        });
    }
    let code = match parse_args() {
        Err(e) => {
            eprintln!("quantaid-loadtest: {e:#}");
            2
        }
        Ok(args) => match runtime().block_on(run(&args)) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("quantaid-loadtest: {e:#}");
                2
            }
        },
    };
    std::process::exit(code);
}
