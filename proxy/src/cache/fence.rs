//! Read fences for the local tier: "a round trip to Redis that began after I arrived".
//!
//! Redis sends a connection's invalidation pushes in order with its replies, so once
//! such a round trip has returned, every invalidation for a write that finished before
//! the request arrived has been received (docs/caching.md, "The local tier"). Requests
//! that arrive while a round trip is under way wait for the next one together: one
//! round trip per batch of requests, however many there are.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

pub struct Fence {
    state: Mutex<State>,
    completed: watch::Sender<Completed>,
}

#[derive(Default)]
struct State {
    /// Round trips started so far; the newest one's number.
    started: u64,
    in_flight: bool,
}

#[derive(Clone, Copy, Default)]
struct Completed {
    /// The round trip that last returned.
    number: u64,
    ok: bool,
}

impl Default for Fence {
    fn default() -> Self {
        Fence { state: Mutex::new(State::default()), completed: watch::Sender::new(Completed::default()) }
    }
}

impl Fence {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a round trip that started after this call did; `true` when it succeeded.
    /// `round_trip` is started in a task of its own, so a caller that gives up (its
    /// client went away) does not leave the others waiting.
    pub async fn pass<R, F>(self: &Arc<Self>, round_trip: R) -> bool
    where
        R: Fn() -> F,
        F: Future<Output = bool> + Send + 'static,
    {
        let mut completed = self.completed.subscribe();
        let wanted = self.state().started + 1;
        loop {
            let lead = {
                let mut state = self.state();
                (!state.in_flight).then(|| {
                    state.in_flight = true;
                    state.started += 1;
                    state.started
                })
            };
            if let Some(number) = lead {
                let fence = self.clone();
                let trip = round_trip();
                tokio::spawn(async move {
                    let ok = trip.await;
                    fence.state().in_flight = false;
                    fence.completed.send_replace(Completed { number, ok });
                });
            }
            if completed.changed().await.is_err() {
                return false;
            }
            let done = *completed.borrow_and_update();
            if done.number >= wanted {
                return done.ok;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A round trip that counts itself and takes a while, so that callers pile up.
    fn counted(trips: &Arc<AtomicU64>) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + '_ {
        move || {
            let trips = trips.clone();
            Box::pin(async move {
                trips.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                true
            })
        }
    }

    #[tokio::test]
    async fn callers_waiting_together_share_one_round_trip() {
        let fence = Arc::new(Fence::default());
        let trips = Arc::new(AtomicU64::new(0));
        // The first caller leads; the 49 that arrive while its trip is out share the next.
        let first = {
            let (fence, trips) = (fence.clone(), trips.clone());
            tokio::spawn(async move { fence.pass(counted(&trips)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let waiting: Vec<_> = (0..49)
            .map(|_| {
                let (fence, trips) = (fence.clone(), trips.clone());
                tokio::spawn(async move { fence.pass(counted(&trips)).await })
            })
            .collect();
        assert!(first.await.unwrap());
        for caller in waiting {
            assert!(caller.await.unwrap());
        }
        assert_eq!(trips.load(Ordering::SeqCst), 2, "one trip for the first caller, one for the 49 behind it");
    }

    #[tokio::test]
    async fn a_caller_never_passes_on_a_round_trip_that_began_before_it_arrived() {
        let fence = Arc::new(Fence::default());
        let started_at = Arc::new(Mutex::new(Vec::new()));
        let trip = |log: Arc<Mutex<Vec<tokio::time::Instant>>>| {
            move || {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(tokio::time::Instant::now());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    true
                }
            }
        };
        let early = {
            let (fence, log) = (fence.clone(), started_at.clone());
            tokio::spawn(async move { fence.pass(trip(log)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let arrived = tokio::time::Instant::now();
        assert!(fence.pass(trip(started_at.clone())).await);
        early.await.unwrap();
        let starts = started_at.lock().unwrap().clone();
        assert_eq!(starts.len(), 2);
        assert!(starts[1] >= arrived, "the late caller passed on the trip that was already out");
    }

    #[tokio::test]
    async fn a_failed_round_trip_fails_its_callers() {
        let fence = Arc::new(Fence::default());
        assert!(!fence.pass(|| async { false }).await);
        assert!(fence.pass(|| async { true }).await, "the next trip is tried afresh");
    }
}
