//! Concurrent misses for one key share one backend call (docs/design.md, invariant 6).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::metrics::METRICS;

/// Slots for the completion stamps of recent flights. A fixed number keeps the memory
/// bounded; two keys sharing a slot only cost a needless cache read.
const STAMP_SLOTS: usize = 4096;

/// When a caller's cache read happened, as [`SingleFlight::now`] counts time: flights
/// finished, not seconds.
#[derive(Clone, Copy)]
pub struct ReadAt(u64);

pub struct SingleFlight<V> {
    in_flight: Mutex<HashMap<String, Arc<OnceCell<V>>>>,
    /// Counts finished flights.
    clock: AtomicU64,
    /// Per key hash, the `clock` value at which its last flight finished.
    finished_at: Box<[AtomicU64]>,
}

impl<V: Clone> Default for SingleFlight<V> {
    fn default() -> Self {
        SingleFlight {
            in_flight: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            finished_at: (0..STAMP_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl<V: Clone> SingleFlight<V> {
    /// Taken before the cache read whose miss may lead to [`Self::run`].
    pub fn now(&self) -> ReadAt {
        ReadAt(self.clock.load(Ordering::SeqCst))
    }

    /// Runs `work` for `key` unless a call for `key` is already running, in which case
    /// it waits for that call's result. If the running caller is cancelled (its client
    /// went away), a waiter takes over the work, so nobody waits on nothing.
    ///
    /// `work` is told whether a flight for `key` may have finished since `read_at`. A
    /// caller whose miss was read just before another flight filled the cache would
    /// otherwise find no flight to join and call the backend a second time; told so,
    /// it reads the cache again first.
    pub async fn run<F: Future<Output = V>>(&self, key: &str, read_at: ReadAt, work: impl FnOnce(bool) -> F) -> V {
        let (cell, leader) = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key) {
                Some(cell) => (cell.clone(), false),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    map.insert(key.to_string(), cell.clone());
                    (cell, true)
                }
            }
        };
        if !leader {
            METRICS.singleflight_coalesced.inc();
        }
        let slot = &self.finished_at[slot_of(key)];
        let value = cell
            .get_or_init(|| async {
                let value = work(slot.load(Ordering::SeqCst) > read_at.0).await;
                // Stamped before the flight leaves the map: whoever then finds no flight
                // to join also finds the stamp.
                let finished = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
                slot.fetch_max(finished, Ordering::SeqCst);
                value
            })
            .await
            .clone();
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(key);
        }
        value
    }
}

fn slot_of(key: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % STAMP_SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_call() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (flights, calls) = (flights.clone(), calls.clone());
                tokio::spawn(async move {
                    let read_at = flights.now();
                    flights
                        .run("k", read_at, |_| async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            7
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Finished flights are forgotten: the next call runs again.
        assert_eq!(flights.run("k", flights.now(), |_| async { 8 }).await, 8);
    }

    #[tokio::test]
    async fn a_caller_whose_read_predates_a_finished_flight_is_told_so() {
        let flights = SingleFlight::<u32>::default();
        let before = flights.now();
        assert_eq!(flights.run("k", before, |recheck| async move { u32::from(recheck) }).await, 0);
        // "k" finished after `before` was taken: a straggler that read then must read again.
        assert_eq!(flights.run("k", before, |recheck| async move { u32::from(recheck) }).await, 1);
        // One that read after that flight finished need not.
        assert_eq!(flights.run("k", flights.now(), |recheck| async move { u32::from(recheck) }).await, 0);
    }
}
