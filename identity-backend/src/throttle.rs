//! Brute-force throttling of password logins, per account and per client IP.
//!
//! Counters live in Postgres so every replica sees the same count: an attacker cannot
//! multiply their budget by spreading attempts over pods. Only failures are counted.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};

use crate::config::ThrottleConfig;
use crate::db::{Conn, Query};
use crate::error::{ApiError, ApiResult};

pub struct LoginKeys {
    account: String,
    ip: String,
}

impl LoginKeys {
    pub fn new(username: &str, ip: IpAddr) -> Self {
        LoginKeys { account: format!("account:{username}"), ip: format!("ip:{ip}") }
    }
}

const CURRENT: Query = Query {
    name: "throttle_current",
    sql: "SELECT key, failures, window_started_at FROM login_throttle WHERE key = ANY($1) AND window_started_at > $2",
};

const RECORD_FAILURE: Query = Query {
    name: "throttle_record_failure",
    sql: "INSERT INTO login_throttle (key, failures, window_started_at)
          SELECT k, 1, $2 FROM unnest($1::text[]) AS k
          ON CONFLICT (key) DO UPDATE SET
            failures = CASE WHEN login_throttle.window_started_at <= $3 THEN 1 ELSE login_throttle.failures + 1 END,
            window_started_at = CASE WHEN login_throttle.window_started_at <= $3 THEN $2
                                     ELSE login_throttle.window_started_at END",
};

const CLEAR: Query = Query { name: "throttle_clear", sql: "DELETE FROM login_throttle WHERE key = $1" };

pub const DELETE_STALE: Query =
    Query { name: "throttle_delete_stale", sql: "DELETE FROM login_throttle WHERE window_started_at <= $1" };

/// `429 too_many_attempts` (with the seconds until the window ends) when either key
/// has used up its failures. Otherwise, whether the account has failures counted.
pub async fn check(conn: &Conn<'_>, cfg: &ThrottleConfig, keys: &LoginKeys, now: DateTime<Utc>) -> ApiResult<bool> {
    let window = Duration::from_std(cfg.window).unwrap_or(Duration::minutes(15));
    let rows = conn.query(&CURRENT, &[&vec![keys.account.as_str(), keys.ip.as_str()], &(now - window)]).await?;
    let mut account_failures = false;
    for row in rows {
        let key: &str = row.get(0);
        let failures: i32 = row.get(1);
        let started: DateTime<Utc> = row.get(2);
        account_failures |= key == keys.account;
        let limit = if key == keys.account { cfg.max_failures_per_account } else { cfg.max_failures_per_ip };
        if failures >= limit {
            let retry_after_secs = (started + window - now).num_seconds().max(1) as u64;
            return Err(ApiError::TooManyAttempts { retry_after_secs });
        }
    }
    Ok(account_failures)
}

pub async fn record_failure(conn: &Conn<'_>, cfg: &ThrottleConfig, keys: &LoginKeys, now: DateTime<Utc>) -> ApiResult<()> {
    let window = Duration::from_std(cfg.window).unwrap_or(Duration::minutes(15));
    conn.execute(&RECORD_FAILURE, &[&vec![keys.account.as_str(), keys.ip.as_str()], &now, &(now - window)]).await?;
    Ok(())
}

/// A successful login resets its account's counter (not the IP's: one good password
/// must not buy an attacker a fresh budget for other accounts).
pub async fn clear_account(conn: &Conn<'_>, keys: &LoginKeys) -> ApiResult<()> {
    conn.execute(&CLEAR, &[&keys.account]).await?;
    Ok(())
}
