//! The shared cache: Redis behind a circuit breaker, a local tier of hot entries in
//! front of it, plus the Bloom negative cache.

pub mod bloom;
pub mod breaker;
mod fence;
mod local;
pub mod redis;

use std::time::Duration;

use rand::Rng;

/// A cache entry's TTL: `base` ±10% jitter (so entries filled together do not expire
/// together), never past `limit` — the entity's own remaining lifetime (docs/design.md, invariant 3).
pub fn jittered_ttl(base: Duration, limit: Option<Duration>) -> Duration {
    let factor = rand::thread_rng().gen_range(0.9..=1.1);
    let ttl = base.mul_f64(factor);
    match limit {
        Some(limit) => ttl.min(limit),
        None => ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_jitter_stays_in_bounds() {
        let base = Duration::from_secs(1800);
        for _ in 0..1000 {
            let ttl = jittered_ttl(base, None);
            assert!(ttl >= base.mul_f64(0.9) && ttl <= base.mul_f64(1.1), "{ttl:?}");
            let capped = jittered_ttl(base, Some(Duration::from_secs(60)));
            assert!(capped <= Duration::from_secs(60));
        }
    }
}
