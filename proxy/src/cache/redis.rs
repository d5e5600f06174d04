//! Redis access for cached lookups: short timeouts, a circuit breaker, and the
//! revocation-aware read and fill scripts from `quantaid_protocol::cache`.
//!
//! Connections come from a [`RedisTarget`]: one address, or the master Sentinel names.
//! A connection is dropped when the breaker opens, so the next one asks again where
//! Redis is; the maintenance task also drops it when Sentinel names another master
//! ([`RedisCache::follow_master`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use quantaid_protocol::cache::{FILL_SCRIPT, LOOKUP_SCRIPT};
use quantaid_runtime::redis_target::RedisTarget;
use redis::aio::ConnectionManager;
use redis::Script;

use crate::cache::breaker::Breaker;
use crate::metrics::METRICS;

/// A connection made through `target`, and the address it went to.
async fn connect(target: &RedisTarget, timeout: Duration) -> redis::RedisResult<(ConnectionManager, String)> {
    let (client, addr) = target.client(timeout).await?;
    let config =
        redis::aio::ConnectionManagerConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout).set_number_of_retries(0);
    Ok((client.get_connection_manager_with_config(config).await?, addr))
}

/// What Redis said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// A live entry's body.
    Hit(String),
    /// A tombstone: the credential is revoked.
    Revoked,
    /// Nothing usable; for user entries, the user version to fill against.
    Miss { user_version: Option<String> },
    /// Redis failed, timed out, or its breaker is open: ask the backend, fill nothing.
    Unavailable,
    /// The calling client's credentials were verified before its last lifecycle change.
    CallerStale,
}

/// A connection and the address it went to.
struct Connected {
    conn: ConnectionManager,
    addr: String,
}

pub struct RedisCache {
    target: Option<RedisTarget>,
    connection: ArcSwapOption<Connected>,
    connect_lock: tokio::sync::Mutex<()>,
    breaker: Breaker,
    timeout: Duration,
    lookup: Script,
    fill: Script,
}

impl RedisCache {
    pub fn new(target: Option<RedisTarget>, timeout: Duration, breaker: Breaker) -> Self {
        RedisCache {
            target,
            connection: ArcSwapOption::empty(),
            connect_lock: tokio::sync::Mutex::new(()),
            breaker,
            timeout,
            lookup: Script::new(LOOKUP_SCRIPT),
            fill: Script::new(FILL_SCRIPT),
        }
    }

    /// The connection, made on first use by whichever request needs it first. That puts
    /// the connection's driver task on the proxy service's own runtime, beside the
    /// requests it serves (no cross-runtime wake-up per call). Connect attempts go
    /// through the breaker, and callers wait for one at most the Redis timeout.
    async fn connection(&self) -> Option<Arc<Connected>> {
        if let Some(conn) = self.connection.load_full() {
            return Some(conn);
        }
        let target = self.target.as_ref()?;
        let _one_at_a_time = tokio::time::timeout(self.timeout, self.connect_lock.lock()).await.ok()?;
        if let Some(conn) = self.connection.load_full() {
            return Some(conn);
        }
        if !self.breaker.allow() {
            return None;
        }
        match tokio::time::timeout(self.timeout * 2, connect(target, self.timeout)).await {
            Ok(Ok((conn, addr))) => {
                tracing::info!(redis = %addr, "connected to Redis");
                let conn = Arc::new(Connected { conn, addr });
                self.connection.store(Some(conn.clone()));
                self.breaker.record_success();
                Some(conn)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot connect to Redis");
                self.failed();
                None
            }
            Err(_) => {
                tracing::warn!("timed out connecting to Redis");
                self.failed();
                None
            }
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connection.load().is_some()
    }

    /// Runs one Redis call under the breaker and the timeout.
    async fn call<T, F>(&self, f: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        if !self.breaker.allow() {
            return None;
        }
        let result = tokio::time::timeout(self.timeout, f(conn.conn.clone())).await;
        match result {
            Ok(Ok(v)) => {
                self.breaker.record_success();
                METRICS.redis_up.set(1);
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis call failed");
                self.failed();
                None
            }
            Err(_) => {
                self.failed();
                None
            }
        }
    }

    fn failed(&self) {
        self.breaker.record_failure();
        if !self.breaker.is_closed() {
            METRICS.redis_up.set(0);
            // The next connection (the breaker's probe) asks again where Redis is: after
            // a failover the old address is dead, or a replica that refuses writes.
            self.connection.store(None);
        }
    }

    /// Drops the connection if Sentinel now names another master than the one it goes
    /// to (a failover while the old master still answers, as a replica).
    pub async fn follow_master(&self) {
        let (Some(target), Some(current)) = (&self.target, self.connection.load_full()) else { return };
        if let Some(master) = target.current_master(self.timeout * 2).await {
            if master != current.addr {
                tracing::warn!(from = %current.addr, to = %master, "Redis master moved; reconnecting");
                self.connection.store(None);
            }
        }
    }

    /// Reads `key`; for a user entry, `user_id` lets a miss carry the user's version;
    /// `caller` (client id, marker value seen at verification) checks remembered client
    /// credentials in the same round trip.
    pub async fn lookup(&self, key: &str, user_id: Option<&str>, caller: Option<(&str, &str)>) -> Cached {
        let reply: Option<(String, String)> = self
            .call(|mut c| async move {
                let mut invocation = self.lookup.key(key);
                let (client, seen) = caller.unwrap_or_default();
                invocation.arg(user_id.unwrap_or("")).arg(client).arg(seen);
                invocation.invoke_async(&mut c).await
            })
            .await;
        match reply {
            None => Cached::Unavailable,
            Some((status, value)) => match status.as_str() {
                "hit" => Cached::Hit(value),
                "revoked" => Cached::Revoked,
                "caller" => Cached::CallerStale,
                _ => Cached::Miss { user_version: (!value.is_empty()).then_some(value) },
            },
        }
    }

    /// Writes an entry unless a revocation happened since its data was read (see
    /// `FILL_SCRIPT`). Failures are ignored: the answer was already given.
    #[allow(clippy::too_many_arguments)]
    pub async fn fill(
        &self,
        key: &str,
        entry: &str,
        ttl: Duration,
        user_id: Option<&str>,
        created_ms: Option<i64>,
        user_version: Option<&str>,
        client_id: Option<&str>,
    ) {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let _: Option<i64> = self
            .call(|mut c| async move {
                let mut invocation = self.fill.key(key);
                invocation
                    .arg(entry)
                    .arg(ttl_ms)
                    .arg(user_id.unwrap_or(""))
                    .arg(created_ms.map(|c| c.to_string()).unwrap_or_default())
                    .arg(user_version.unwrap_or(""))
                    .arg(client_id.unwrap_or(""));
                invocation.invoke_async(&mut c).await
            })
            .await;
    }

    /// One plain `GET`; `None` when Redis cannot answer, `Some(None)` when the key is absent.
    pub async fn get(&self, key: &str) -> Option<Option<String>> {
        self.call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await }).await
    }

    /// `used_memory` from `INFO memory`; also serves as the breaker's probe when idle.
    pub async fn memory_used(&self) -> Option<i64> {
        let info: String = self.call(|mut c| async move { redis::cmd("INFO").arg("memory").query_async(&mut c).await }).await?;
        info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok())
    }

    pub fn is_up(&self) -> bool {
        self.connection.load().is_some() && self.breaker.is_closed()
    }
}
