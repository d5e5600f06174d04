//! The local tier: hot Redis entries copied into the proxy, dropped the moment Redis
//! says a key they depend on changed (docs/caching.md, "The local tier").
//!
//! A tier belongs to one Redis connection, the one that read its entries with
//! `CLIENT TRACKING on`: Redis then pushes an `invalidate` message on that connection
//! for every later change of every key the reads touched (the entry, its tombstone, the
//! user's and the client's markers, the user version). The connection's reader applies
//! each push here before it hands over any reply that came after it, and a copy is only
//! served after a [`Fence`] round trip on the same connection that began after the
//! request arrived: a revocation that returned before then has already removed it.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quantaid_protocol::cache::is_entry_key;
use quick_cache::sync::Cache;
use redis::{PushInfo, PushKind, Value};

use crate::cache::fence::Fence;
use crate::metrics::METRICS;

/// Writes are counted per stripe of keys, so that an invalidation only spoils the fills
/// of nearby keys that were in flight.
const STRIPES: usize = 32;

#[derive(Clone)]
struct Entry {
    body: Arc<str>,
    expires: Instant,
}

/// Bytes an entry holds, roughly: its key, its body, and the bookkeeping beside them.
#[derive(Clone)]
struct EntryWeight;

impl quick_cache::Weighter<String, Entry> for EntryWeight {
    fn weight(&self, key: &String, entry: &Entry) -> u64 {
        (key.len() + entry.body.len() + 96) as u64
    }
}

/// How many changes Redis had announced, per stripe and in all, when a read was sent.
#[derive(Clone, Copy)]
pub struct Snapshot {
    clears: u64,
    stripe: u64,
}

#[derive(Default)]
struct Changes {
    clears: u64,
    stripes: [u64; STRIPES],
}

pub struct LocalTier {
    entries: Cache<String, Entry, EntryWeight>,
    /// The `client_revoked_before` value each calling client was last seen to have, by
    /// a read on this connection (which tracks the marker): a copy answers a remembered
    /// client only while its marker is the one it was verified with.
    callers: Cache<String, Arc<str>>,
    /// Taken by every insert and every invalidation, so that an insert either lands
    /// before an invalidation (which then removes it) or sees that one happened since
    /// its read was sent (and does not insert).
    changes: Mutex<Changes>,
    hasher: std::collections::hash_map::RandomState,
    /// False once the connection is gone: nothing here is known to be current any more.
    alive: AtomicBool,
    pub fence: Arc<Fence>,
    max_ttl: Duration,
}

impl LocalTier {
    pub fn new(max_bytes: u64, max_ttl: Duration) -> Self {
        let estimated_items = usize::try_from(max_bytes / 512).unwrap_or(usize::MAX).max(16);
        LocalTier {
            entries: Cache::with_weighter(estimated_items, max_bytes, EntryWeight),
            callers: Cache::new(1024),
            changes: Mutex::new(Changes::default()),
            hasher: Default::default(),
            alive: AtomicBool::new(true),
            fence: Arc::new(Fence::default()),
            max_ttl,
        }
    }

    fn changes(&self) -> std::sync::MutexGuard<'_, Changes> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % STRIPES as u64) as usize
    }

    /// A copy of `key`, if one is held and still fits its lifetime; for a remembered
    /// client (`caller`: its id and the marker it was verified with) only while that
    /// marker is current. Serve it only after a fence ([`Self::fence`]).
    pub fn get(&self, key: &str, caller: Option<(&str, &str)>) -> Option<Arc<str>> {
        if !self.alive.load(Ordering::Acquire) {
            return None;
        }
        let entry = self.entries.get(key)?;
        if entry.expires <= Instant::now() {
            return None;
        }
        if let Some((client, marker)) = caller {
            if self.callers.get(client).as_deref() != Some(marker) {
                return None;
            }
        }
        Some(entry.body)
    }

    /// Taken before a read is sent; [`Self::insert`] compares against it.
    pub fn snapshot(&self, key: &str) -> Snapshot {
        let changes = self.changes();
        Snapshot { clears: changes.clears, stripe: changes.stripes[self.stripe(key)] }
    }

    /// Keeps a copy of what a read sent after `snapshot` returned, unless Redis has
    /// announced a change since that may concern it. `redis_ttl`: the entry's remaining
    /// lifetime in Redis, which the copy may not outlive.
    pub fn insert(&self, snapshot: Snapshot, key: &str, caller: Option<(&str, &str)>, body: Arc<str>, redis_ttl: Duration) {
        let changes = self.changes();
        let unchanged = changes.clears == snapshot.clears && changes.stripes[self.stripe(key)] == snapshot.stripe;
        if !unchanged || !self.alive.load(Ordering::Acquire) {
            return;
        }
        let expires = Instant::now() + redis_ttl.min(self.max_ttl);
        self.entries.insert(key.to_string(), Entry { body, expires });
        if let Some((client, marker)) = caller {
            self.callers.insert(client.to_string(), marker.into());
        }
    }

    /// Applies one push from the tracking connection.
    pub fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        match key {
                            Value::BulkString(key) if is_entry_key(&String::from_utf8_lossy(key)) => {
                                self.invalidate(&String::from_utf8_lossy(key));
                            }
                            // A marker or user version: which entries depend on it is not
                            // recorded, so all go. These writes are rare (logout-all,
                            // password and client changes).
                            _ => return self.clear(),
                        }
                    }
                }
                // `FLUSHALL`/`FLUSHDB`, or a message in an unknown shape.
                _ => self.clear(),
            },
            PushKind::Disconnection => {
                self.alive.store(false, Ordering::Release);
                self.clear();
            }
            _ => {}
        }
    }

    fn invalidate(&self, key: &str) {
        let mut changes = self.changes();
        changes.stripes[self.stripe(key)] += 1;
        self.entries.remove(key);
        METRICS.local_cache_invalidations.with_label_values(&["key"]).inc();
    }

    /// Drops every copy: a marker changed, the connection went, or a fence failed.
    pub fn clear(&self) {
        let mut changes = self.changes();
        changes.clears += 1;
        self.entries.clear();
        self.callers.clear();
        METRICS.local_cache_invalidations.with_label_values(&["all"]).inc();
    }

    /// Bytes the copies hold (by [`EntryWeight`]).
    pub fn weight(&self) -> u64 {
        self.entries.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalidate(keys: &[&str]) -> PushInfo {
        let keys = keys.iter().map(|k| Value::BulkString(k.as_bytes().to_vec())).collect();
        PushInfo { kind: PushKind::Invalidate, data: vec![Value::Array(keys)] }
    }

    fn tier() -> LocalTier {
        LocalTier::new(1 << 20, Duration::from_secs(30))
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn an_entry_push_drops_that_entry_and_a_marker_push_drops_all() {
        let tier = tier();
        for key in ["token:a", "token:b"] {
            tier.insert(tier.snapshot(key), key, None, "{}".into(), MINUTE);
        }
        tier.on_push(invalidate(&["token:a"]));
        assert_eq!(tier.get("token:a", None), None);
        assert!(tier.get("token:b", None).is_some());
        tier.on_push(invalidate(&["revoked_before:u1"]));
        assert_eq!(tier.get("token:b", None), None);
    }

    #[test]
    fn a_read_overtaken_by_a_change_is_not_kept() {
        let tier = tier();
        let before = tier.snapshot("token:a");
        tier.on_push(invalidate(&["token:a"]));
        tier.insert(before, "token:a", None, "{}".into(), MINUTE);
        assert_eq!(tier.get("token:a", None), None, "the read may predate the change");
        let before = tier.snapshot("token:a");
        tier.on_push(invalidate(&["uver:u1"]));
        tier.insert(before, "token:a", None, "{}".into(), MINUTE);
        assert_eq!(tier.get("token:a", None), None);
    }

    #[test]
    fn copies_never_outlive_their_redis_entry_or_the_connection() {
        let tier = tier();
        tier.insert(tier.snapshot("token:a"), "token:a", None, "{}".into(), Duration::ZERO);
        assert_eq!(tier.get("token:a", None), None, "expired in Redis");
        tier.insert(tier.snapshot("token:b"), "token:b", None, "{}".into(), MINUTE);
        tier.on_push(PushInfo { kind: PushKind::Disconnection, data: vec![] });
        assert_eq!(tier.get("token:b", None), None);
        tier.insert(tier.snapshot("token:b"), "token:b", None, "{}".into(), MINUTE);
        assert_eq!(tier.get("token:b", None), None, "nothing is kept once the connection is gone");
    }

    #[test]
    fn a_flush_drops_everything() {
        let tier = tier();
        tier.insert(tier.snapshot("user:1"), "user:1", None, "{}".into(), MINUTE);
        tier.on_push(PushInfo { kind: PushKind::Invalidate, data: vec![Value::Nil] });
        assert_eq!(tier.get("user:1", None), None);
    }

    #[test]
    fn a_remembered_client_is_answered_only_with_the_marker_it_was_read_with() {
        let tier = tier();
        tier.insert(tier.snapshot("token:a"), "token:a", Some(("c1", "5")), "{}".into(), MINUTE);
        assert!(tier.get("token:a", Some(("c1", "5"))).is_some());
        assert_eq!(tier.get("token:a", Some(("c1", "6"))), None);
        assert_eq!(tier.get("token:a", Some(("c2", "5"))), None, "another client's marker was never read");
        assert!(tier.get("token:a", None).is_some());
    }

    #[test]
    fn memory_stays_within_its_bound() {
        let tier = LocalTier::new(64 * 1024, MINUTE);
        let body: Arc<str> = "x".repeat(1000).into();
        for i in 0..1000 {
            let key = format!("token:{i}");
            tier.insert(tier.snapshot(&key), &key, None, body.clone(), MINUTE);
        }
        assert!(tier.weight() <= 64 * 1024, "{}", tier.weight());
    }
}
