//! Redis access for cached lookups: short timeouts, a circuit breaker, and the
//! revocation-aware read and fill scripts from `quantaid_protocol::cache`, with the local
//! tier in front of them ([`LocalTier`]).
//!
//! Connections come from a [`RedisTarget`]: one address, or the master Sentinel names.
//! A connection is dropped when the breaker opens or it closes, so the next one asks
//! again where Redis is; the maintenance task also drops it when Sentinel names another
//! master ([`RedisCache::follow_master`]). A connection's local tier goes with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use quantaid_protocol::cache::{dependency_keys, FILL_SCRIPT, LOOKUP_SCRIPT};
use quantaid_runtime::redis_target::RedisTarget;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Script};

use crate::cache::breaker::Breaker;
use crate::cache::local::LocalTier;
use crate::metrics::METRICS;

/// The local tier's size and lifetime bound (`local_bytes == 0`: no tier).
#[derive(Clone, Copy, Debug)]
pub struct LocalSettings {
    pub bytes: u64,
    pub max_ttl: Duration,
}

/// A RESP3 connection made through `target` and the address it went to; with a local
/// tier, the connection tracks the keys it reads and feeds their invalidations to it.
async fn connect(target: &RedisTarget, timeout: Duration, local: LocalSettings) -> redis::RedisResult<Connected> {
    let (client, addr) = target.client(timeout).await?;
    let mut info = client.get_connection_info().clone();
    info.redis.protocol = ProtocolVersion::RESP3;
    let client = redis::Client::open(info)?;
    let tier = (local.bytes > 0).then(|| Arc::new(LocalTier::new(local.bytes, local.max_ttl)));
    let open = Arc::new(AtomicBool::new(true));
    let (pushed_to, closed) = (tier.clone(), open.clone());
    let on_push = move |push: PushInfo| {
        if push.kind == PushKind::Disconnection {
            closed.store(false, Ordering::Release);
        }
        if let Some(tier) = &pushed_to {
            tier.on_push(push);
        }
        Ok::<(), std::convert::Infallible>(())
    };
    let config = AsyncConnectionConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout).set_push_sender(on_push);
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
    if tier.is_some() {
        let () = redis::cmd("CLIENT").arg("TRACKING").arg("ON").query_async(&mut conn).await?;
    }
    Ok(Connected { conn, addr, open, local: tier })
}

/// What Redis said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// A live entry's body.
    Hit(Arc<str>),
    /// A tombstone: the credential is revoked.
    Revoked,
    /// Nothing usable; for user entries, the user version to fill against.
    Miss { user_version: Option<String> },
    /// Redis failed, timed out, or its breaker is open: ask the backend, fill nothing.
    Unavailable,
    /// The calling client's credentials were verified before its last lifecycle change.
    CallerStale,
}

/// What one run of the lookup script said.
enum Read {
    /// `ttl`: the entry's remaining lifetime in Redis, when it has one.
    Hit {
        body: Arc<str>,
        ttl: Option<Duration>,
        user: String,
        client: String,
    },
    Revoked,
    Miss(String),
    CallerStale,
}

/// A connection, the address it went to, and the copies of what it read.
struct Connected {
    conn: MultiplexedConnection,
    addr: String,
    /// Cleared when the connection closes (Redis went away): the next call connects anew.
    open: Arc<AtomicBool>,
    local: Option<Arc<LocalTier>>,
}

impl Connected {
    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Drops every local copy: the connection is being given up, and its invalidations
    /// will no longer be waited for.
    fn abandon(&self) {
        if let Some(tier) = &self.local {
            tier.clear();
        }
    }
}

pub struct RedisCache {
    target: Option<RedisTarget>,
    connection: ArcSwapOption<Connected>,
    connect_lock: tokio::sync::Mutex<()>,
    breaker: Breaker,
    timeout: Duration,
    local: LocalSettings,
    lookup: Script,
    fill: Script,
}

impl RedisCache {
    pub fn new(target: Option<RedisTarget>, timeout: Duration, breaker: Breaker, local: LocalSettings) -> Self {
        RedisCache {
            target,
            connection: ArcSwapOption::empty(),
            connect_lock: tokio::sync::Mutex::new(()),
            breaker,
            timeout,
            local,
            lookup: Script::new(LOOKUP_SCRIPT),
            fill: Script::new(FILL_SCRIPT),
        }
    }

    /// The connection, made on first use by whichever request needs it first. That puts
    /// the connection's driver task on the proxy service's own runtime, beside the
    /// requests it serves (no cross-runtime wake-up per call). Connect attempts go
    /// through the breaker, and callers wait for one at most the Redis timeout.
    async fn connection(&self) -> Option<Arc<Connected>> {
        match self.connection.load_full() {
            Some(conn) if conn.is_open() => return Some(conn),
            Some(_) => self.drop_connection(),
            None => {}
        }
        let target = self.target.as_ref()?;
        let _one_at_a_time = tokio::time::timeout(self.timeout, self.connect_lock.lock()).await.ok()?;
        if let Some(conn) = self.connection.load_full().filter(|c| c.is_open()) {
            return Some(conn);
        }
        if !self.breaker.allow() {
            return None;
        }
        match tokio::time::timeout(self.timeout * 2, connect(target, self.timeout, self.local)).await {
            Ok(Ok(conn)) => {
                tracing::info!(redis = %conn.addr, "connected to Redis");
                let conn = Arc::new(conn);
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
        self.connection.load().as_ref().is_some_and(|c| c.is_open())
    }

    /// Gives up the current connection and its local copies.
    fn drop_connection(&self) {
        if let Some(conn) = self.connection.swap(None) {
            conn.abandon();
        }
    }

    /// Runs one Redis call under the breaker and the timeout.
    async fn call<T, F>(&self, f: impl FnOnce(MultiplexedConnection) -> F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        self.call_on(&conn, f).await
    }

    /// [`Self::call`] on a connection the caller already holds.
    async fn call_on<T, F>(&self, conn: &Connected, f: impl FnOnce(MultiplexedConnection) -> F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
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
            self.drop_connection();
        }
    }

    /// Drops the connection if Sentinel now names another master than the one it goes
    /// to (a failover while the old master still answers, as a replica).
    pub async fn follow_master(&self) {
        let (Some(target), Some(current)) = (&self.target, self.connection.load_full()) else { return };
        if let Some(master) = target.current_master(self.timeout * 2).await {
            if master != current.addr {
                tracing::warn!(from = %current.addr, to = %master, "Redis master moved; reconnecting");
                self.drop_connection();
            }
        }
    }

    /// Reads `key`; for a user entry, `user_id` lets a miss carry the user's version;
    /// `caller` (client id, marker value seen at verification) checks remembered client
    /// credentials in the same round trip. A hit held by the local tier is answered
    /// after a fence instead of a read.
    pub async fn lookup(&self, key: &str, user_id: Option<&str>, caller: Option<(&str, &str)>) -> Cached {
        let Some(conn) = self.connection().await else { return Cached::Unavailable };
        if let Some(body) = self.local_hit(&conn, key, caller).await {
            METRICS.local_cache_hits.inc();
            return Cached::Hit(body);
        }
        let Some(reply) = self.read(&conn, &[key], user_id, caller).await else { return Cached::Unavailable };
        match reply {
            Read::Hit { body, user, client, .. } => {
                if let Some(tier) = &conn.local {
                    self.keep_locally(&conn, tier, key, user_id, caller, &user, &client).await;
                }
                Cached::Hit(body)
            }
            Read::Revoked => Cached::Revoked,
            Read::CallerStale => Cached::CallerStale,
            Read::Miss(version) => Cached::Miss { user_version: (!version.is_empty()).then_some(version) },
        }
    }

    /// One run of the lookup script with `keys` declared (the entry's key first).
    async fn read(&self, conn: &Connected, keys: &[&str], user_id: Option<&str>, caller: Option<(&str, &str)>) -> Option<Read> {
        let reply: Vec<String> = self
            .call_on(conn, |mut c| async move {
                let mut invocation = self.lookup.prepare_invoke();
                for key in keys {
                    invocation.key(*key);
                }
                let (client, seen) = caller.unwrap_or_default();
                invocation.arg(user_id.unwrap_or("")).arg(client).arg(seen);
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let mut fields = reply.into_iter();
        let (status, value) = (fields.next()?, fields.next()?);
        Some(match status.as_str() {
            "hit" => {
                let ttl = fields.next().and_then(|ms| ms.parse::<u64>().ok()).map(Duration::from_millis);
                let (user, client) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
                Read::Hit { body: value.into(), ttl, user, client }
            }
            "revoked" => Read::Revoked,
            "caller" => Read::CallerStale,
            _ => Read::Miss(value),
        })
    }

    /// Reads a hit again with every key it depends on declared, so that Redis tracks
    /// them all on this connection, and keeps what that read returned in the local tier.
    #[allow(clippy::too_many_arguments)]
    async fn keep_locally(
        &self,
        conn: &Connected,
        tier: &LocalTier,
        key: &str,
        user_id: Option<&str>,
        caller: Option<(&str, &str)>,
        user: &str,
        client: &str,
    ) {
        let dependencies = dependency_keys(key, user, client, caller.map(|(id, _)| id));
        let declared: Vec<&str> = dependencies.iter().map(String::as_str).collect();
        let snapshot = tier.snapshot(key);
        if let Some(Read::Hit { body, ttl: Some(ttl), user: now_user, client: now_client }) =
            self.read(conn, &declared, user_id, caller).await
        {
            // Declared keys are what Redis tracks: the entry must still depend on just those.
            if (now_user.as_str(), now_client.as_str()) == (user, client) {
                tier.insert(snapshot, key, caller, body, ttl);
            }
        }
    }

    /// The local tier's copy of `key`, once a fence on its connection that began after
    /// this call has returned (docs/caching.md, "The local tier"). A failed fence empties
    /// the tier: the answer then comes from Redis.
    async fn local_hit(&self, conn: &Connected, key: &str, caller: Option<(&str, &str)>) -> Option<Arc<str>> {
        let tier = conn.local.as_ref()?;
        tier.get(key, caller)?;
        let timeout = self.timeout;
        let fenced = tier
            .fence
            .pass(|| {
                // Called only by the caller that sends the batch's round trip.
                let mut connection = conn.conn.clone();
                async move {
                    METRICS.local_cache_fences.inc();
                    let command = redis::cmd("PING");
                    let ping = command.query_async::<()>(&mut connection);
                    matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(())))
                }
            })
            .await;
        if !fenced {
            tier.clear();
            return None;
        }
        tier.get(key, caller)
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
        self.is_connected() && self.breaker.is_closed()
    }

    /// Bytes the current connection's local tier holds.
    pub fn local_bytes(&self) -> u64 {
        self.connection.load().as_ref().and_then(|c| c.local.as_ref().map(|t| t.weight())).unwrap_or(0)
    }
}
