//! Brute-force throttling of password logins and of MFA codes, per account and per
//! client IP.
//!
//! Counters live in Postgres so every replica sees the same count: an attacker cannot
//! multiply their budget by spreading attempts over pods. Password logins count their
//! failures; MFA codes count every attempt before the code is checked (so concurrent
//! guesses cannot all slip past one read of the counter) and give a success back.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::ThrottleConfig;
use crate::error::{ApiError, ApiResult};
use crate::storage::throttle::{CLEAR, CURRENT, RECORD_FAILURE, REFUND};
use crate::storage::{Conn, StorageResult};

pub struct LoginKeys {
    account: String,
    ip: String,
}

impl LoginKeys {
    pub fn new(username: &str, ip: IpAddr) -> Self {
        LoginKeys { account: format!("account:{username}"), ip: format!("ip:{ip}") }
    }

    /// MFA counters: kept apart from the password ones, so a right password (which
    /// clears the password counter) does not clear them.
    pub fn mfa(user_id: Uuid, ip: IpAddr) -> Self {
        LoginKeys { account: format!("mfa:user:{user_id}"), ip: format!("mfa:ip:{ip}") }
    }
}

/// `429 too_many_attempts` (with the seconds until the window ends) when either key
/// has used up its failures. Otherwise, whether the account has failures counted.
pub async fn check(conn: &Conn<'_>, cfg: &ThrottleConfig, keys: &LoginKeys, now: DateTime<Utc>) -> ApiResult<bool> {
    let window = cfg.window;
    let rows = conn.query(&CURRENT, &[&vec![keys.account.as_str(), keys.ip.as_str()], &(now - window)]).await?;
    let mut account_failures = false;
    for row in rows {
        let (key, failures, started) = (row.key.as_str(), row.failures, row.window_started_at);
        account_failures |= key == keys.account;
        let limit = if key == keys.account { cfg.max_failures_per_account } else { cfg.max_failures_per_ip };
        if failures >= limit {
            let retry_after_secs = (started + window - now).num_seconds().max(1) as u64;
            return Err(ApiError::TooManyAttempts { retry_after_secs });
        }
    }
    Ok(account_failures)
}

pub async fn record_failure(conn: &Conn<'_>, cfg: &ThrottleConfig, keys: &LoginKeys, now: DateTime<Utc>) -> StorageResult<()> {
    let window = cfg.window;
    conn.execute(&RECORD_FAILURE, &[&vec![keys.account.as_str(), keys.ip.as_str()], &now, &(now - window)]).await?;
    Ok(())
}

/// An attempt counted before it is checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Allowed,
    /// Over a limit: `first` is true for the attempt that crossed it (audit it once).
    Refused {
        retry_after_secs: u64,
        first: bool,
    },
}

/// Counts one attempt on both keys atomically (each counter is read and written by one
/// statement), then says whether it stays within the limits.
pub async fn count_attempt(conn: &Conn<'_>, cfg: &ThrottleConfig, keys: &LoginKeys, now: DateTime<Utc>) -> StorageResult<Attempt> {
    let window = cfg.window;
    let rows = conn.query(&RECORD_FAILURE, &[&vec![keys.account.as_str(), keys.ip.as_str()], &now, &(now - window)]).await?;
    let mut outcome = Attempt::Allowed;
    for row in rows {
        let (key, count, started) = (row.key.as_str(), row.failures, row.window_started_at);
        let limit = if key == keys.account { cfg.max_failures_per_account } else { cfg.max_failures_per_ip };
        if count > limit {
            let retry = (started + window - now).num_seconds().max(1) as u64;
            outcome = match outcome {
                Attempt::Allowed => Attempt::Refused { retry_after_secs: retry, first: count == limit + 1 },
                Attempt::Refused { retry_after_secs, first } => {
                    Attempt::Refused { retry_after_secs: retry_after_secs.max(retry), first: first || count == limit + 1 }
                }
            };
        }
    }
    Ok(outcome)
}

/// After a right MFA code: the account's counter is cleared, and the attempt is given
/// back to the IP (so many users behind one address do not use up its budget).
pub async fn attempt_succeeded(conn: &Conn<'_>, keys: &LoginKeys) -> StorageResult<()> {
    conn.execute(&CLEAR, &[&keys.account]).await?;
    conn.execute(&REFUND, &[&keys.ip]).await?;
    Ok(())
}

/// A successful login resets its account's counter (not the IP's: one good password
/// must not buy an attacker a fresh budget for other accounts).
pub async fn clear_account(conn: &Conn<'_>, keys: &LoginKeys) -> StorageResult<()> {
    conn.execute(&CLEAR, &[&keys.account]).await?;
    Ok(())
}
