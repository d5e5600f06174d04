//! The two ways a scenario offers load, named as k6 names them:
//!
//! - [`arrival_rate`] (k6 `constant-arrival-rate` / `ramping-arrival-rate`): an *open*
//!   model. Iterations start on a schedule whatever the service's speed, as independent
//!   clients do, so a slow service cannot slow the offered load down. An iteration that
//!   would exceed `max_vus` in flight is dropped and counted.
//! - [`ramping_vus`] (k6 `ramping-vus`): a *closed* model. A number of virtual users,
//!   following the stages, each run a user journey (log in, look around, think).
//!
//! Both end by themselves: the schedule has an end, and every request has a timeout.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::Recorder;

/// Move linearly to `target` (iterations/s, or virtual users) over `duration`.
#[derive(Clone, Copy, Debug)]
pub struct Stage {
    pub duration: Duration,
    pub target: f64,
}

pub fn stage(secs: u64, target: f64) -> Stage {
    Stage { duration: Duration::from_secs(secs), target }
}

/// The value the stages give `at` into the run, starting from `start`.
fn value_at(start: f64, stages: &[Stage], at: Duration) -> Option<f64> {
    let mut from = start;
    let mut t = at;
    for s in stages {
        if t < s.duration {
            let progress = t.as_secs_f64() / s.duration.as_secs_f64();
            return Some(from + (s.target - from) * progress);
        }
        t -= s.duration;
        from = s.target;
    }
    None
}

pub fn total_duration(stages: &[Stage]) -> Duration {
    stages.iter().map(|s| s.duration).sum()
}

/// Starts iterations at `start_rate` per second changing as the stages say, until the
/// stages end, then waits for the ones in flight. `iteration(n, scheduled)` gets its
/// sequence number and the instant it was meant to start (for the latency).
pub async fn arrival_rate<F, Fut>(recorder: &Recorder, start_rate: f64, stages: &[Stage], max_vus: usize, iteration: F)
where
    F: Fn(u64, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let begin = Instant::now();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let mut next = begin;
    let mut n = 0u64;
    while let Some(rate) = value_at(start_rate, stages, next - begin) {
        if rate <= 0.0 {
            // Nothing is due; look again shortly.
            next += Duration::from_millis(10);
            continue;
        }
        tokio::time::sleep_until(next.into()).await;
        if in_flight.load(Ordering::Relaxed) >= max_vus {
            recorder.dropped_iteration();
        } else {
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (fut, in_flight) = (iteration(n, next), in_flight.clone());
            tasks.spawn(async move {
                fut.await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        n += 1;
        next += Duration::from_secs_f64(1.0 / rate);
        // Reap finished iterations so the set stays small during long runs.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Tells a virtual user to stop; it finishes the request in hand and leaves.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Think time: sleeps `d`, or less if told to stop. Returns `false` when stopped.
    pub async fn think(&mut self, d: Duration) -> bool {
        if self.is_set() {
            return false;
        }
        let stopped = tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.0.wait_for(|stop| *stop) => true,
        };
        !stopped && !self.is_set()
    }
}

/// Runs as many copies of `user(vu_id, stop)` as the stages say, starting from 0 and
/// adjusting ten times a second; the newest users leave first on the way down.
pub async fn ramping_vus<F, Fut>(recorder: &Recorder, stages: &[Stage], user: F)
where
    F: Fn(u64, Stop) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let begin = Instant::now();
    let mut tasks = JoinSet::new();
    let mut active: Vec<watch::Sender<bool>> = Vec::new();
    let mut next_id = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while let Some(target) = value_at(0.0, stages, begin.elapsed()) {
        let target = target.round() as usize;
        while active.len() < target {
            let (tx, rx) = watch::channel(false);
            tasks.spawn(user(next_id, Stop(rx)));
            active.push(tx);
            next_id += 1;
        }
        while active.len() > target {
            let _ = active.pop().expect("non-empty").send(true);
        }
        recorder.sample_vus(active.len() as u64);
        while tasks.try_join_next().is_some() {}
        tick.tick().await;
    }
    for tx in active.drain(..) {
        let _ = tx.send(true);
    }
    while tasks.join_next().await.is_some() {}
    recorder.sample_vus(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn stages_interpolate_linearly_and_end() {
        let stages = [stage(10, 100.0), stage(10, 100.0)];
        assert_eq!(value_at(0.0, &stages, Duration::from_secs(5)), Some(50.0));
        assert_eq!(value_at(0.0, &stages, Duration::from_secs(15)), Some(100.0));
        assert_eq!(value_at(0.0, &stages, Duration::from_secs(20)), None);
        assert_eq!(total_duration(&stages), Duration::from_secs(20));
    }

    #[tokio::test]
    async fn arrival_rate_starts_the_scheduled_number_and_drops_beyond_max_vus() {
        let rec = Recorder::new();
        let started = Arc::new(AtomicU64::new(0));
        let s = started.clone();
        // 200/s for 0.5 s = 100 iterations, each taking 50 ms: ~10 in flight, under 64.
        arrival_rate(&rec, 200.0, &[Stage { duration: Duration::from_millis(500), target: 200.0 }], 64, |_, _| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!((95..=101).contains(&started.load(Ordering::Relaxed)), "{}", started.load(Ordering::Relaxed));
        assert_eq!(rec.snapshot().dropped_iterations, 0);

        // Iterations that never finish in time: only max_vus start, the rest are dropped.
        let rec = Recorder::new();
        arrival_rate(&rec, 200.0, &[Stage { duration: Duration::from_millis(200), target: 200.0 }], 5, |_, _| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
        })
        .await;
        assert!(rec.snapshot().dropped_iterations >= 30, "{}", rec.snapshot().dropped_iterations);
    }

    #[tokio::test]
    async fn ramping_vus_follows_the_stages_and_stops_every_user() {
        let rec = Recorder::new();
        let peak = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(AtomicUsize::new(0));
        let (p, l) = (peak.clone(), live.clone());
        ramping_vus(&rec, &[stage(1, 20.0), stage(1, 0.0)], move |_, mut stop| {
            let (p, l) = (p.clone(), l.clone());
            async move {
                let now = l.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                while stop.think(Duration::from_millis(20)).await {}
                l.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .await;
        let peak = peak.load(Ordering::SeqCst);
        assert!((15..=20).contains(&peak), "peak {peak}");
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }
}
