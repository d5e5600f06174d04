//! TOTP codes: the one way every code is checked (throttled, never replayed).

use std::net::IpAddr;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{self, Action};
use crate::domain::security::totp;
use crate::domain::throttle::{self, LoginKeys};
use crate::error::{ApiError, ApiResult};
use crate::storage::totp::{TOTP_SECRET, TOTP_USE_STEP};
use crate::storage::Conn;
use crate::SharedState;

/// Codes that may be tried on one MFA challenge before it is void.
pub const MFA_MAX_FAILURES: i32 = 5;

/// A TOTP code being checked for a user: counted against the MFA throttle before the
/// code is looked at (see `throttle.rs`), then settled with [`TotpAttempt::finish`].
pub struct TotpAttempt {
    keys: LoginKeys,
    user_id: Uuid,
    pub secret: Vec<u8>,
    pub last_used_step: i64,
}

/// Why a code was not checked.
pub enum TotpRefusal {
    /// No confirmed TOTP (or the user is disabled): a plain failure.
    NotEnrolled,
    Throttled(ApiError),
}

impl TotpAttempt {
    /// Counts one attempt for `user_id` from `ip` across every challenge and
    /// re-authentication; past the budget it is refused (`429`, audited once per
    /// window, visible to the owner as `mfa.throttled`).
    pub async fn begin(state: &SharedState, conn: &Conn<'_>, user_id: Uuid, ip: IpAddr) -> ApiResult<Result<Self, TotpRefusal>> {
        let keys = LoginKeys::mfa(user_id, ip);
        let now = Utc::now();
        if let throttle::Attempt::Refused { retry_after_secs, first } =
            throttle::count_attempt(conn, &state.config.mfa_throttle, &keys, now).await?
        {
            if first {
                let details = json!({"window_secs": state.config.mfa_throttle.window.num_seconds()});
                audit::record(conn, Some(user_id), Action::MfaThrottled, ip, details).await?;
                tracing::warn!("MFA attempts throttled");
            }
            state.metrics.mfa_verifications.with_label_values(&["throttled"]).inc();
            return Ok(Err(TotpRefusal::Throttled(ApiError::TooManyAttempts { retry_after_secs })));
        }
        let Some(row) = conn.query_opt(&TOTP_SECRET, &[&user_id]).await? else {
            state.metrics.mfa_verifications.with_label_values(&["failure"]).inc();
            return Ok(Err(TotpRefusal::NotEnrolled));
        };
        Ok(Ok(TotpAttempt { keys, user_id, secret: row.secret, last_used_step: row.last_used_step }))
    }

    /// The step `code` matches now, if it is right and not a replay.
    pub fn matching_step(&self, code: &str) -> Option<i64> {
        let unix = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        totp::verify(&self.secret, code.trim(), unix, u64::try_from(self.last_used_step).unwrap_or(0)).map(|s| s as i64)
    }

    /// A wrong code is audited (`mfa.failure`); a right one clears the account's count.
    pub async fn finish(self, state: &SharedState, conn: &Conn<'_>, ip: IpAddr, ok: bool) -> ApiResult<()> {
        let result = if ok { "success" } else { "failure" };
        state.metrics.mfa_verifications.with_label_values(&[result]).inc();
        if ok {
            throttle::attempt_succeeded(conn, &self.keys).await?;
        } else {
            audit::record(conn, Some(self.user_id), Action::MfaFailure, ip, json!({"reason": "wrong_code"})).await?;
        }
        Ok(())
    }
}

/// Checks a TOTP code outside a login (re-authentication): throttled, and its step is
/// used up like a login's. `Ok(false)` for a wrong code.
pub async fn check_code(state: &SharedState, conn: &Conn<'_>, user_id: Uuid, code: &str, ip: IpAddr) -> ApiResult<bool> {
    let attempt = match TotpAttempt::begin(state, conn, user_id, ip).await? {
        Ok(attempt) => attempt,
        Err(TotpRefusal::Throttled(e)) => return Err(e),
        Err(TotpRefusal::NotEnrolled) => return Ok(false),
    };
    let ok = match attempt.matching_step(code) {
        Some(step) => conn.query_opt(&TOTP_USE_STEP, &[&user_id, &step]).await?.is_some(),
        None => false,
    };
    attempt.finish(state, conn, ip, ok).await?;
    Ok(ok)
}
