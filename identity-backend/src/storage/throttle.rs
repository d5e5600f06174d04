//! The `login_throttle` table: one counter per key and window.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{FromRow, Query};

pub struct ThrottleRow {
    pub key: String,
    pub failures: i32,
    pub window_started_at: DateTime<Utc>,
}

impl FromRow for ThrottleRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ThrottleRow {
            key: row.try_get("key")?,
            failures: row.try_get("failures")?,
            window_started_at: row.try_get("window_started_at")?,
        })
    }
}

pub const CURRENT: Query<ThrottleRow> = Query::new(
    "throttle_current",
    "SELECT key, failures, window_started_at FROM login_throttle WHERE key = ANY($1) AND window_started_at > $2",
);
pub const RECORD_FAILURE: Query<ThrottleRow> = Query::new(
    "throttle_record_failure",
    "INSERT INTO login_throttle (key, failures, window_started_at)
     SELECT k, 1, $2 FROM unnest($1::text[]) AS k
     ON CONFLICT (key) DO UPDATE SET
       failures = CASE WHEN login_throttle.window_started_at <= $3 THEN 1 ELSE login_throttle.failures + 1 END,
       window_started_at = CASE WHEN login_throttle.window_started_at <= $3 THEN $2
                                ELSE login_throttle.window_started_at END
     RETURNING key, failures, window_started_at",
);
/// Gives one counted attempt back (an MFA code that turned out right).
pub const REFUND: Query =
    Query::new("throttle_refund", "UPDATE login_throttle SET failures = failures - 1 WHERE key = $1 AND failures > 0");
pub const CLEAR: Query = Query::new("throttle_clear", "DELETE FROM login_throttle WHERE key = $1");
pub const DELETE_STALE: Query = Query::new("throttle_delete_stale", "DELETE FROM login_throttle WHERE window_started_at <= $1");
