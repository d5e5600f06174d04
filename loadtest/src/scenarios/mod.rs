//! The scenarios: what load each offers, at full scale or `--quick`, and what it must
//! show. Each returns what it recorded, its verdicts, and notes for the report.

mod chaos;
mod login;
mod pool;
mod tokens;

use crate::charts::Marker;
use crate::client::{Api, OAuthClient};
use crate::metrics::Snapshot;
use crate::thresholds::Verdict;

/// What every scenario can use: the service, the seed data, the database (for the
/// pool-exhaustion scenario's slow queries).
pub struct Ctx {
    pub api: Api,
    pub users: usize,
    pub clients: Vec<OAuthClient>,
    pub database_url: String,
    /// ≤ 60 s and at a scale a shared CI machine sustains, so that CI keeps every
    /// script working; the full run is the measurement.
    pub quick: bool,
}

/// What a scenario measured and concluded.
pub struct Outcome {
    pub snapshot: Snapshot,
    pub verdicts: Vec<Verdict>,
    /// The load's shape, in words, for the report's conditions.
    pub shape: String,
    pub markers: Vec<Marker>,
    /// Markdown paragraphs or tables for the report (step results, phases, ...).
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok)
    }
}

pub const NAMES: [&str; 6] = ["chaos", "login", "login-ramp", "token-rate", "token-stepup", "pool-exhaustion"];

pub async fn run(name: &str, ctx: &Ctx) -> anyhow::Result<Outcome> {
    match name {
        "chaos" => chaos::run(ctx).await,
        "login" => Ok(login::journey(ctx).await),
        "login-ramp" => Ok(login::ramp(ctx).await),
        "token-rate" => Ok(tokens::constant_rate(ctx).await),
        "token-stepup" => Ok(tokens::step_up(ctx).await),
        "pool-exhaustion" => pool::exhaustion(ctx).await,
        other => anyhow::bail!("unknown scenario '{other}' (one of: {})", NAMES.join(", ")),
    }
}

/// `"2m30s"`-style durations for the shape descriptions.
pub fn human(secs: u64) -> String {
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}
