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
    use tokio::sync::Semaphore;

    /// Round trips that count themselves and return only when the test releases them
    /// (one permit each), so the test decides who arrives while one is out.
    struct Trips {
        started: Arc<AtomicU64>,
        release: Arc<Semaphore>,
    }

    impl Trips {
        fn new() -> Self {
            Trips { started: Arc::new(AtomicU64::new(0)), release: Arc::new(Semaphore::new(0)) }
        }

        fn trip(&self) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send + 'static {
            let (started, release) = (self.started.clone(), self.release.clone());
            move || {
                let (started, release) = (started.clone(), release.clone());
                Box::pin(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    release.acquire().await.map(|permit| permit.forget()).is_ok()
                })
            }
        }

        fn started(&self) -> u64 {
            self.started.load(Ordering::SeqCst)
        }

        /// Lets every spawned task run until it waits again.
        async fn settle() {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
    }

    fn caller(fence: &Arc<Fence>, trips: &Trips) -> tokio::task::JoinHandle<bool> {
        let (fence, trip) = (fence.clone(), trips.trip());
        tokio::spawn(async move { fence.pass(trip).await })
    }

    #[tokio::test]
    async fn callers_waiting_together_share_one_round_trip() {
        let (fence, trips) = (Arc::new(Fence::default()), Trips::new());
        // The first caller leads; the 49 that arrive while its trip is out share the next.
        let first = caller(&fence, &trips);
        Trips::settle().await;
        assert_eq!(trips.started(), 1);
        let waiting: Vec<_> = (0..49).map(|_| caller(&fence, &trips)).collect();
        Trips::settle().await;
        trips.release.add_permits(1);
        Trips::settle().await;
        trips.release.add_permits(1);
        let all = async {
            assert!(first.await.unwrap());
            for caller in waiting {
                assert!(caller.await.unwrap());
            }
        };
        // A third trip would wait for a permit that never comes.
        tokio::time::timeout(Duration::from_secs(5), all).await.expect("the 49 shared one round trip");
        assert_eq!(trips.started(), 2, "one trip for the first caller, one for the 49 behind it");
    }

    #[tokio::test]
    async fn a_caller_never_passes_on_a_round_trip_that_began_before_it_arrived() {
        let (fence, trips) = (Arc::new(Fence::default()), Trips::new());
        let early = caller(&fence, &trips);
        Trips::settle().await;
        let late = caller(&fence, &trips);
        Trips::settle().await;
        trips.release.add_permits(1);
        Trips::settle().await;
        assert!(early.await.unwrap());
        assert!(!late.is_finished(), "the late caller passed on the trip that was already out");
        assert_eq!(trips.started(), 2, "the late caller sent a trip of its own");
        trips.release.add_permits(1);
        assert!(late.await.unwrap());
    }

    #[tokio::test]
    async fn a_failed_round_trip_fails_its_callers() {
        let fence = Arc::new(Fence::default());
        assert!(!fence.pass(|| async { false }).await);
        assert!(fence.pass(|| async { true }).await, "the next trip is tried afresh");
    }
}
