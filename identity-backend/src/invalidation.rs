//! Publishes revocations to the proxies' Redis cache, so a revoked credential stops
//! being served by every replica the moment the revoking call returns (invariant 2).
//!
//! The backend writes revocation markers, never cache entries (see
//! `quantaid_protocol::cache` for the key scheme and the race with concurrent fills). If
//! Redis cannot take them now, they go to the `cache_invalidations` outbox in Postgres
//! and a background task retries until Redis accepts them. Meanwhile Postgres, the
//! system of record, already says "revoked", and a proxy whose Redis is unreachable
//! answers from the backend.

use std::time::Duration;

use quantaid_protocol::cache::{self, TOMBSTONE};
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::db::{Conn, Db, Query};
use crate::error::ApiResult;
use crate::metrics::Metrics;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// A single session or token (its cache key) is revoked for good.
    Tombstone(String),
    /// Every credential of the user created at or before `at_ms` is revoked.
    RevokedBefore { user_id: Uuid, at_ms: i64 },
    /// The user record changed (or is gone): cached copies are stale.
    UserChanged(Uuid),
    /// Every token of the OAuth client created at or before `at_ms` is revoked, and
    /// credentials of it that proxies verified earlier must be verified again.
    ClientRevokedBefore { client_id: String, at_ms: i64 },
}

impl Invalidation {
    fn to_row(&self) -> (&'static str, String, i64) {
        match self {
            Invalidation::Tombstone(key) => ("tombstone", key.clone(), 0),
            Invalidation::RevokedBefore { user_id, at_ms } => ("revoked_before", user_id.to_string(), *at_ms),
            Invalidation::UserChanged(user_id) => ("user_changed", user_id.to_string(), 0),
            Invalidation::ClientRevokedBefore { client_id, at_ms } => ("client_revoked_before", client_id.clone(), *at_ms),
        }
    }

    fn from_row(kind: &str, key: String, value: i64) -> Option<Self> {
        Some(match kind {
            "tombstone" => Invalidation::Tombstone(key),
            "revoked_before" => Invalidation::RevokedBefore { user_id: key.parse().ok()?, at_ms: value },
            "user_changed" => Invalidation::UserChanged(key.parse().ok()?),
            "client_revoked_before" => Invalidation::ClientRevokedBefore { client_id: key, at_ms: value },
            _ => return None,
        })
    }
}

const OUTBOX_INSERT: Query = Query {
    name: "invalidation_outbox_insert",
    sql: "INSERT INTO cache_invalidations (kind, key, value) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])",
};
const OUTBOX_PENDING: Query = Query {
    name: "invalidation_outbox_pending",
    sql: "SELECT id, kind, key, value FROM cache_invalidations ORDER BY id LIMIT 500",
};
const OUTBOX_DELETE: Query =
    Query { name: "invalidation_outbox_delete", sql: "DELETE FROM cache_invalidations WHERE id = ANY($1)" };

pub struct Invalidator {
    client: Option<redis::Client>,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
    timeout: Duration,
    /// How long markers live: longer than any cache entry can.
    marker_ttl_ms: u64,
}

impl Invalidator {
    /// `redis_url` `None` disables publishing (a backend without a caching proxy).
    pub fn new(redis_url: Option<&str>, timeout: Duration, cache_max_ttl: Duration) -> anyhow::Result<Self> {
        let client = redis_url.map(redis::Client::open).transpose()?;
        Ok(Invalidator {
            client,
            connection: tokio::sync::Mutex::new(None),
            timeout,
            marker_ttl_ms: u64::try_from(cache_max_ttl.as_millis()).unwrap_or(u64::MAX / 4) * 2,
        })
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        let client = self.client.as_ref()?;
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(self.timeout)
                .set_response_timeout(self.timeout)
                .set_number_of_retries(1);
            match tokio::time::timeout(self.timeout * 2, client.get_connection_manager_with_config(config)).await {
                Ok(Ok(c)) => *slot = Some(c),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot connect to Redis for cache invalidation"),
                Err(_) => tracing::warn!("timed out connecting to Redis for cache invalidation"),
            }
        }
        slot.clone()
    }

    async fn write(&self, items: &[Invalidation]) -> bool {
        let Some(mut conn) = self.connection().await else { return self.client.is_none() };
        let ttl = self.marker_ttl_ms;
        let mut pipe = redis::pipe();
        for item in items {
            match item {
                Invalidation::Tombstone(key) => {
                    pipe.set_options(key, TOMBSTONE, redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl)))
                        .ignore();
                }
                Invalidation::RevokedBefore { user_id, at_ms } => {
                    // Plain EVAL: a pipeline cannot recover from EVALSHA's NOSCRIPT, and
                    // revocations are rare enough that sending the script costs nothing.
                    pipe.cmd("EVAL")
                        .arg(cache::RAISE_REVOKED_BEFORE_SCRIPT)
                        .arg(1)
                        .arg(cache::revoked_before_key(&user_id.to_string()))
                        .arg(*at_ms)
                        .arg(ttl)
                        .ignore();
                }
                Invalidation::UserChanged(user_id) => {
                    let key = cache::user_version_key(&user_id.to_string());
                    pipe.incr(&key, 1).ignore().pexpire(&key, ttl as i64).ignore();
                    pipe.del(cache::user_key(user_id)).ignore();
                }
                Invalidation::ClientRevokedBefore { client_id, at_ms } => {
                    pipe.cmd("EVAL")
                        .arg(cache::RAISE_CLIENT_MARKER_SCRIPT)
                        .arg(1)
                        .arg(cache::client_revoked_before_key(client_id))
                        .arg(*at_ms)
                        .arg(ttl)
                        .ignore();
                }
            }
        }
        match tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cache invalidation write failed");
                false
            }
            Err(_) => {
                tracing::warn!("cache invalidation write timed out");
                false
            }
        }
    }

    /// Writes `items` to Redis, or, failing that, to the outbox for retry.
    pub async fn publish(&self, conn: &Conn<'_>, metrics: &Metrics, items: Vec<Invalidation>) -> ApiResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        if self.write(&items).await {
            metrics.cache_invalidations.with_label_values(&["published"]).inc_by(items.len() as u64);
            return Ok(());
        }
        let rows: Vec<_> = items.iter().map(Invalidation::to_row).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let keys: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        let values: Vec<i64> = rows.iter().map(|r| r.2).collect();
        conn.execute(&OUTBOX_INSERT, &[&kinds, &keys, &values]).await?;
        metrics.cache_invalidations.with_label_values(&["deferred"]).inc_by(items.len() as u64);
        Ok(())
    }

    /// Retries deferred invalidations; returns how many reached Redis.
    pub async fn drain_outbox(&self, db: &Db) -> ApiResult<usize> {
        let conn = db.conn().await?;
        let rows = conn.query(&OUTBOX_PENDING, &[]).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let items: Vec<Invalidation> =
            rows.into_iter().filter_map(|r| Invalidation::from_row(r.get(1), r.get(2), r.get(3))).collect();
        if !self.write(&items).await {
            return Ok(0);
        }
        conn.execute(&OUTBOX_DELETE, &[&ids]).await?;
        Ok(items.len())
    }
}

/// Drains the outbox every second, for as long as the backend runs.
pub async fn run_outbox(state: crate::SharedState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.invalidator.drain_outbox(&state.db).await {
            Ok(0) => {}
            Ok(n) => {
                state.metrics.cache_invalidations.with_label_values(&["published"]).inc_by(n as u64);
                tracing::info!(count = n, "deferred cache invalidations published");
            }
            Err(e) => tracing::debug!(error = %e, "cache invalidation outbox not drained"),
        }
    }
}
