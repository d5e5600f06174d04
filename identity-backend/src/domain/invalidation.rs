//! Publishes revocations to the proxies' Redis cache, so a revoked credential stops
//! being served by every replica the moment the revoking call returns (docs/design.md, invariant 2).
//!
//! The backend writes revocation markers, never cache entries (see
//! `quantaid_protocol::cache` for the key scheme and the race with concurrent fills). A
//! connection that turns out dead is replaced and the write repeated at once. If Redis
//! still cannot take the markers, they go to the `cache_invalidations` outbox in Postgres,
//! a background task retries until Redis accepts them, and the call that revoked answers
//! `503` + `Retry-After` rather than 2xx: its change is committed, but proxies that still
//! reach Redis would keep serving the old entries (docs/caching.md).

use std::time::Duration;

use quantaid_protocol::cache::{self, TOMBSTONE};
use quantaid_runtime::redis_target::RedisTarget;
use redis::aio::MultiplexedConnection;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::storage::outbox::{OutboxRow, OUTBOX_DELETE, OUTBOX_INSERT, OUTBOX_PENDING};
use crate::storage::{Conn, Db, StorageResult};

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

    fn from_row(row: OutboxRow) -> Option<Self> {
        let OutboxRow { kind, key, value, .. } = row;
        Some(match kind.as_str() {
            "tombstone" => Invalidation::Tombstone(key),
            "revoked_before" => Invalidation::RevokedBefore { user_id: key.parse().ok()?, at_ms: value },
            "user_changed" => Invalidation::UserChanged(key.parse().ok()?),
            "client_revoked_before" => Invalidation::ClientRevokedBefore { client_id: key, at_ms: value },
            _ => return None,
        })
    }
}

tokio::task_local! {
    /// Set for the current request when one of its invalidations went to the outbox
    /// instead of Redis (see [`tracking_unpublished`]).
    static UNPUBLISHED: std::cell::Cell<bool>;
}

/// Runs `work` (one request), and says whether any invalidation it published went to the
/// outbox instead of Redis (`http/middleware.rs`, `acknowledge_only_published`).
pub async fn tracking_unpublished<F: std::future::Future>(work: F) -> (F::Output, bool) {
    UNPUBLISHED
        .scope(std::cell::Cell::new(false), async move {
            let output = work.await;
            (output, UNPUBLISHED.with(std::cell::Cell::get))
        })
        .await
}

/// The Redis connection and which one it is, so that of two writers that both saw it
/// fail only the first replaces it.
struct Slot {
    generation: u64,
    connection: Option<MultiplexedConnection>,
    /// Where `connection` goes.
    addr: String,
}

pub struct Invalidator {
    target: Option<RedisTarget>,
    slot: tokio::sync::Mutex<Slot>,
    /// Replicas that must acknowledge markers (`WAIT`) before they count as written.
    wait_replicas: u32,
    timeout: Duration,
    /// How long markers live: longer than any cache entry can.
    marker_ttl_ms: u64,
}

impl Invalidator {
    /// `target` `None` disables publishing (a backend without a caching proxy).
    pub fn new(target: Option<RedisTarget>, wait_replicas: u32, timeout: Duration, cache_max_ttl: Duration) -> Self {
        if let Some(t) = &target {
            tracing::info!(redis = %t.describe(), wait_replicas, "publishing cache invalidations");
        }
        Invalidator {
            target,
            slot: tokio::sync::Mutex::new(Slot { generation: 0, connection: None, addr: String::new() }),
            wait_replicas,
            timeout,
            marker_ttl_ms: u64::try_from(cache_max_ttl.as_millis()).unwrap_or(u64::MAX / 4) * 2,
        }
    }

    /// The current connection, opening one if there is none (for Sentinel, to the master
    /// it names now); with its generation.
    async fn connection(&self, target: &RedisTarget) -> Option<(u64, MultiplexedConnection)> {
        let mut slot = self.slot.lock().await;
        if slot.connection.is_none() {
            // A write may include WAIT, which takes up to one more timeout.
            let config = redis::AsyncConnectionConfig::new().set_connection_timeout(self.timeout).set_response_timeout(self.timeout * 2);
            let connect = async {
                let (client, addr) = target.client(self.timeout).await?;
                client.get_multiplexed_async_connection_with_config(&config).await.map(|c| (c, addr))
            };
            match tokio::time::timeout(self.timeout * 3, connect).await {
                Ok(Ok((c, addr))) => {
                    tracing::info!(redis = %addr, "connected to Redis for cache invalidation");
                    slot.generation += 1;
                    slot.connection = Some(c);
                    slot.addr = addr;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot connect to Redis for cache invalidation"),
                Err(_) => tracing::warn!("timed out connecting to Redis for cache invalidation"),
            }
        }
        slot.connection.clone().map(|c| (slot.generation, c))
    }

    /// Forgets connection `generation` (it failed), unless another writer already did.
    async fn discard(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.generation == generation {
            slot.connection = None;
        }
    }

    /// Under Sentinel: if the master moved since the connection was made, replaces the
    /// connection now rather than at the next revocation, so that a failover is
    /// followed within a second whatever the traffic (the old master may still answer,
    /// as a replica that refuses writes).
    pub async fn follow_master(&self) {
        let Some(target) = self.target.as_ref().filter(|t| t.is_replicated()) else { return };
        let Some(master) = target.current_master(self.timeout * 2).await else { return };
        let generation = {
            let slot = self.slot.lock().await;
            if slot.connection.is_none() || slot.addr == master {
                return;
            }
            tracing::warn!(from = %slot.addr, to = %master, "Redis master moved; reconnecting");
            slot.generation
        };
        self.discard(generation).await;
        self.connection(target).await;
    }

    fn pipeline(&self, items: &[Invalidation]) -> redis::Pipeline {
        let ttl = self.marker_ttl_ms;
        let mut pipe = redis::pipe();
        for item in items {
            match item {
                Invalidation::Tombstone(key) => {
                    pipe.set_options(key, TOMBSTONE, redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl))).ignore();
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
        pipe
    }

    /// Writes `items` to Redis. A connection found dead by this write (Redis restarted,
    /// failed over, or a link broke since the last write) is replaced and the write sent
    /// again at once: every marker is idempotent, so a write that did land is harmless
    /// to repeat. With `wait_replicas`, the write counts only once that many replicas
    /// hold it (`WAIT`), so that a failover cannot lose it (docs/caching.md).
    async fn write(&self, items: &[Invalidation]) -> bool {
        let Some(target) = &self.target else { return true };
        let mut pipe = self.pipeline(items);
        if self.wait_replicas > 0 {
            pipe.cmd("WAIT").arg(self.wait_replicas).arg(self.timeout.as_millis() as u64);
        }
        for attempt in 0..2 {
            let Some((generation, mut conn)) = self.connection(target).await else { return false };
            let reply = tokio::time::timeout(self.timeout * 2, pipe.query_async::<Vec<i64>>(&mut conn)).await;
            match reply {
                Ok(Ok(acks)) => {
                    let acked = acks.last().copied().unwrap_or(0);
                    if self.wait_replicas == 0 || acked >= i64::from(self.wait_replicas) {
                        return true;
                    }
                    // Written to the master only: a failover now could lose it. The
                    // outbox writes it again until a replica has it too.
                    tracing::warn!(acked, wanted = self.wait_replicas, "cache invalidation not acknowledged by enough Redis replicas");
                    return false;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, attempt, "cache invalidation write failed"),
                Err(_) => tracing::warn!(attempt, "cache invalidation write timed out"),
            }
            self.discard(generation).await;
        }
        false
    }

    /// Writes `items`, together with any invalidations still waiting in the outbox, to
    /// Redis. If Redis does not take them, `items` join the outbox and the current
    /// request is marked so that it does not answer 2xx ([`tracking_unpublished`]).
    /// Draining the outbox first is what makes a retried call honest: it answers 2xx only
    /// once nothing it (or an earlier call) revoked is still unpublished.
    pub async fn publish(&self, conn: &Conn<'_>, metrics: &Metrics, items: Vec<Invalidation>) -> StorageResult<()> {
        if self.target.is_none() {
            return Ok(());
        }
        let pending = conn.query(&OUTBOX_PENDING, &[]).await?;
        if items.is_empty() && pending.is_empty() {
            return Ok(());
        }
        let pending_ids: Vec<i64> = pending.iter().map(|r| r.id).collect();
        let mut all: Vec<Invalidation> = pending.into_iter().filter_map(Invalidation::from_row).collect();
        let drained = all.len();
        all.extend(items.iter().cloned());
        if self.write(&all).await {
            if !pending_ids.is_empty() {
                conn.execute(&OUTBOX_DELETE, &[&pending_ids]).await?;
            }
            metrics.cache_invalidations.with_label_values(&["published"]).inc_by(all.len() as u64);
            if drained > 0 {
                tracing::info!(count = drained, "deferred cache invalidations published");
            }
            return Ok(());
        }
        let _ = UNPUBLISHED.try_with(|flag| flag.set(true));
        if items.is_empty() {
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
    pub async fn drain_outbox(&self, db: &Db) -> StorageResult<usize> {
        let conn = db.conn().await?;
        let rows = conn.query(&OUTBOX_PENDING, &[]).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let items: Vec<Invalidation> = rows.into_iter().filter_map(Invalidation::from_row).collect();
        if !self.write(&items).await {
            return Ok(0);
        }
        conn.execute(&OUTBOX_DELETE, &[&ids]).await?;
        Ok(items.len())
    }
}

/// Drains the outbox every second, and follows a Sentinel failover, for as long as the
/// backend runs.
pub async fn run_outbox(state: crate::SharedState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.invalidator.follow_master().await;
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
