//! Periodic deletion of rows that can no longer matter: stale throttle windows, dead
//! MFA challenges, and sessions and tokens a day past their expiry.

use std::time::Duration;

use chrono::Utc;

use crate::storage::sessions::{DELETE_DEAD_CHALLENGES, DELETE_DEAD_SESSIONS};
use crate::storage::throttle::DELETE_STALE;
use crate::storage::tokens::DELETE_DEAD_TOKENS;
use crate::storage::StorageResult;
use crate::SharedState;

const INTERVAL: Duration = Duration::from_secs(300);
/// Dead sessions and tokens are kept this long, so "expired" stays distinguishable
/// from "never existed" while anyone still presents them.
const GRACE: chrono::Duration = chrono::Duration::days(1);

pub async fn run(state: SharedState) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&state).await {
            tracing::warn!(error = %e, "housekeeping sweep failed");
        }
    }
}

async fn sweep(state: &SharedState) -> StorageResult<()> {
    let now = Utc::now();
    // The longest throttle window: a counter younger than it may still be in force.
    let window = state.config.throttle.window.max(state.config.mfa_throttle.window);
    let conn = state.db.conn().await?;
    conn.execute(&DELETE_STALE, &[&(now - window)]).await?;
    conn.execute(&DELETE_DEAD_CHALLENGES, &[&now]).await?;
    conn.execute(&DELETE_DEAD_SESSIONS, &[&(now - GRACE)]).await?;
    conn.execute(&DELETE_DEAD_TOKENS, &[&(now - GRACE)]).await?;
    Ok(())
}
