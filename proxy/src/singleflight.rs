//! Concurrent misses for one key share one backend call (docs/design.md, invariant 6).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::metrics::METRICS;

pub struct SingleFlight<V> {
    in_flight: Mutex<HashMap<String, Arc<OnceCell<V>>>>,
}

impl<V: Clone> Default for SingleFlight<V> {
    fn default() -> Self {
        SingleFlight { in_flight: Mutex::new(HashMap::new()) }
    }
}

impl<V: Clone> SingleFlight<V> {
    /// Runs `work` for `key` unless a call for `key` is already running, in which case
    /// it waits for that call's result. If the running caller is cancelled (its client
    /// went away), a waiter takes over the work, so nobody waits on nothing.
    pub async fn run<F: Future<Output = V>>(&self, key: &str, work: impl FnOnce() -> F) -> V {
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
        let value = cell.get_or_init(work).await.clone();
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(key);
        }
        value
    }
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
                    flights
                        .run("k", || async {
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
        assert_eq!(flights.run("k", || async { 8 }).await, 8);
    }
}
