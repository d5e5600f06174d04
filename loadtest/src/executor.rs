//! The ways load is offered, named as k6 names them:
//!
//! - [`arrival_rate`] (k6 `constant-arrival-rate` / `ramping-arrival-rate`): an *open*
//!   model. Iterations start on a schedule whatever the service's speed, as independent
//!   clients do, so a slow service cannot slow the offered load down. An iteration that
//!   would exceed `max_vus` in flight is dropped and counted.
//! - [`ramping_vus`] (k6 `ramping-vus`): a *closed* model. A number of virtual users,
//!   following the stages, each run a user journey (log in, look around, think).
//! - [`closed_loop`] (k6 `constant-vus` with a warm-up): C workers each send one request,
//!   wait for the answer and send the next, so at most C requests are in flight and the
//!   offered load adapts to the server's speed. The benchmark measures saturation
//!   throughput with it; requests that start during the warm-up are not counted.
//!
//! All end by themselves: the schedule or the deadline has an end, and every request
//! has a timeout.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::{Recorder, Sample, Stats};

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

/// Runs `op` in a closed loop on `concurrency` tokio tasks for `warmup + duration`.
/// `op` gets a global sequence number (to rotate users or tokens) and says whether the
/// request succeeded, or what kind of failure it got. Each worker keeps its own tally,
/// so the measurement adds no lock between the workers; no request starts after the
/// deadline.
pub async fn closed_loop<F, Fut>(concurrency: usize, warmup: Duration, duration: Duration, op: F) -> Sample
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let seq = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (op, seq) = (op.clone(), seq.clone());
        workers.spawn(async move {
            let mut stats = Stats::empty();
            let mut last_done = measure_from;
            loop {
                let started = Instant::now();
                if started >= deadline {
                    break;
                }
                let result = op(seq.fetch_add(1, Ordering::Relaxed)).await;
                let done = Instant::now();
                if started >= measure_from {
                    stats.record(done - started, &result);
                    last_done = done;
                }
            }
            (stats, last_done)
        });
    }
    let mut parts = Vec::with_capacity(concurrency);
    while let Some(part) = workers.join_next().await {
        parts.push(part.expect("load worker panicked"));
    }
    Sample::merge(parts, measure_from)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn closed_loop_counts_requests_and_failures_and_stops_at_the_deadline() {
        let started = Instant::now();
        let sample = closed_loop(4, Duration::from_millis(50), Duration::from_millis(200), |n| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if n % 10 == 0 {
                Err("status 503".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        let s = &sample.stats;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(s.requests > 20, "{}", s.requests);
        assert!(s.failed > 0 && s.failed < s.requests);
        assert_eq!(s.failures.get("status 503"), Some(&s.failed));
        assert!(s.percentile_ms(50.0) >= 5.0);
        assert!(sample.throughput() > 0.0);
    }
}
