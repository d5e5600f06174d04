//! A circuit breaker for Redis: after `threshold` consecutive failures it opens for a
//! while, so requests stop paying the Redis timeout; then one probe (half-open) decides
//! whether it closes again (docs/design.md, invariant 5).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the circuit is open; 0 = closed.
    open_until_ms: AtomicU64,
    probing: AtomicBool,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold,
            open_for,
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1 so that "open until 0" can mean closed.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether a call may go to Redis now. While open, no; once the open period ends,
    /// exactly one caller gets to probe.
    pub fn allow(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if self.now_ms() < until {
            return false;
        }
        self.probing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) == 0
    }

    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    pub fn record_failure(&self) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.threshold || self.probing.load(Ordering::Acquire) {
            self.open_until_ms.store(self.now_ms() + self.open_for.as_millis() as u64, Ordering::Release);
            self.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_then_probes_once() {
        let b = Breaker::new(3, Duration::from_secs(1));
        assert!(b.allow());
        b.record_failure();
        b.record_failure();
        assert!(b.allow() && b.is_closed(), "below the threshold it stays closed");
        b.record_failure();
        assert!(!b.is_closed());
        assert!(!b.allow(), "open: no calls");

        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.allow(), "half-open: one probe");
        assert!(!b.allow(), "only one probe at a time");
        b.record_failure();
        assert!(!b.allow(), "a failed probe reopens at once");

        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.allow());
        b.record_success();
        assert!(b.is_closed() && b.allow() && b.allow());
    }
}
