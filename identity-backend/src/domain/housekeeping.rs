//! Periodic deletion of rows that can no longer matter: stale throttle windows, dead
//! MFA challenges, and sessions and tokens a day past their expiry.

use std::time::Duration;

use chrono::Utc;

use crate::domain::throttle::DELETE_STALE;
use crate::storage::Query;
use crate::SharedState;

const DELETE_DEAD_CHALLENGES: Query = Query { name: "mfa_challenge_delete_dead", sql: "DELETE FROM mfa_challenges WHERE expires_at < $1" };
const DELETE_DEAD_SESSIONS: Query = Query { name: "session_delete_dead", sql: "DELETE FROM sessions WHERE expires_at < $1" };
const DELETE_DEAD_TOKENS: Query = Query {
    name: "token_delete_dead",
    sql: "DELETE FROM oauth_tokens WHERE expires_at < $1 AND (refresh_expires_at IS NULL OR refresh_expires_at < $1)",
};

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

async fn sweep(state: &SharedState) -> Result<(), crate::error::ApiError> {
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
