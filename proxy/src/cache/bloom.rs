//! The Bloom negative cache (docs/design.md, invariant 1).
//!
//! The filter holds every key that could be live: all user ids and the digests of every
//! live session and token, from a repeatable-read snapshot of the backend's database.
//! Its **watermark** trails the snapshot by a safety margin. It answers "definitely
//! absent" only for a key created before the watermark: such a key, if it existed, was
//! committed before the snapshot and so is in the filter. Newer keys are never judged
//! by it, which is what makes "created on replica A, looked up at once on replica B"
//! safe with no coordination.
//!
//! Every few seconds the proxy fetches what was created since and inserts it (the
//! snapshot's `since_ms` form), then advances the watermark; every few minutes it
//! rebuilds from scratch to shed revoked and expired keys. Either swap is atomic: a
//! lookup sees the old filter or the new one, never a half-built one. Without a filter
//! (start-up, backend unreachable) nothing is judged absent.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use fastbloom::AtomicBloomFilter;
use quantaid_protocol::snapshot::Snapshot;

use crate::metrics::METRICS;

struct Filter {
    bits: AtomicBloomFilter,
    /// Keys created before this (Unix ms) are all in `bits`.
    watermark_ms: AtomicI64,
    inserted: AtomicUsize,
    capacity: usize,
}

#[derive(Default)]
pub struct BloomGuard {
    current: ArcSwapOption<Filter>,
}

impl BloomGuard {
    /// True only when `key`, created at `created_ms`, certainly does not exist.
    pub fn definitely_absent(&self, key: &str, created_ms: i64) -> bool {
        let guard = self.current.load();
        let Some(filter) = guard.as_ref() else { return false };
        // Watermark first: inserts made before it advanced are visible after this load.
        let watermark = filter.watermark_ms.load(Ordering::Acquire);
        created_ms < watermark && !filter.bits.contains(key)
    }

    /// Installs a filter built from a full snapshot, sized for growth until the next
    /// rebuild.
    pub fn replace(&self, snapshot: &Snapshot, fp_rate: f64) {
        let capacity = (snapshot.keys.len() * 2).max(100_000);
        let bits = AtomicBloomFilter::with_false_pos(fp_rate).expected_items(capacity);
        for key in &snapshot.keys {
            bits.insert(key);
        }
        METRICS.bloom_keys.set(snapshot.keys.len() as i64);
        self.current.store(Some(Arc::new(Filter {
            bits,
            watermark_ms: AtomicI64::new(snapshot.watermark_ms),
            inserted: AtomicUsize::new(snapshot.keys.len()),
            capacity,
        })));
    }

    /// Adds what was created since the last snapshot, then advances the watermark.
    /// Returns false when the filter is missing or too full, so the caller rebuilds.
    pub fn catch_up(&self, snapshot: &Snapshot) -> bool {
        let guard = self.current.load();
        let Some(filter) = guard.as_ref() else { return false };
        let inserted = filter.inserted.fetch_add(snapshot.keys.len(), Ordering::AcqRel) + snapshot.keys.len();
        for key in &snapshot.keys {
            filter.bits.insert(key);
        }
        filter.watermark_ms.fetch_max(snapshot.watermark_ms, Ordering::AcqRel);
        METRICS.bloom_keys.set(inserted as i64);
        inserted <= filter.capacity
    }

    /// The current watermark, for the next catch-up's `since_ms`.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.current.load().as_ref().map(|f| f.watermark_ms.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(watermark_ms: i64, keys: &[&str]) -> Snapshot {
        Snapshot { watermark_ms, keys: keys.iter().map(|k| k.to_string()).collect() }
    }

    #[test]
    fn judges_only_keys_older_than_the_watermark() {
        let guard = BloomGuard::default();
        assert!(!guard.definitely_absent("user:x", 0), "no filter: nothing is absent");
        guard.replace(&snapshot(1_000, &["user:a"]), 0.001);
        assert!(!guard.definitely_absent("user:a", 500), "present");
        assert!(guard.definitely_absent("user:x", 500), "old and absent");
        assert!(!guard.definitely_absent("user:x", 1_000), "at or after the watermark: unknown");
        // Catch-up adds the new key before advancing the watermark.
        assert!(guard.catch_up(&snapshot(2_000, &["user:new"])));
        assert!(!guard.definitely_absent("user:new", 1_500));
        assert!(guard.definitely_absent("user:y", 1_500));
        assert_eq!(guard.watermark_ms(), Some(2_000));
    }
}
