//! The argon2id ceiling: how many password hashes per second this machine can do at
//! all, with the backend's parameters, one hashing thread per core, no HTTP and no
//! database. A password login costs one such hash (verification recomputes it), so
//! this bounds logins/s from above.

use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;

use crate::metrics::{Sample, Stats};

/// The backend's defaults (OWASP's argon2id minimum); the backend is started with
/// these set explicitly, so the ceiling and the logins measure the same work.
pub const M_COST_KIB: u32 = 19456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

pub fn hasher() -> Argon2<'static> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes on `threads` OS threads for `warmup + duration`; only hashes started after
/// the warm-up are counted. Each thread stops starting new hashes at the deadline.
pub fn measure(threads: usize, warmup: Duration, duration: Duration) -> Sample {
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + duration;
    let parts: Vec<(Stats, Instant)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let argon2 = hasher();
                    let mut stats = Stats::empty();
                    let mut last_done = measure_from;
                    loop {
                        let started = Instant::now();
                        if started >= deadline {
                            break;
                        }
                        // The same call the backend makes: a fresh salt, a PHC string out.
                        let salt = SaltString::generate(&mut OsRng);
                        let result =
                            argon2.hash_password(b"correct horse battery staple", &salt).map(|_| ()).map_err(|e| format!("argon2: {e}"));
                        let done = Instant::now();
                        if started >= measure_from {
                            stats.record(done - started, &result);
                            last_done = done;
                        }
                    }
                    (stats, last_done)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("hash thread panicked")).collect()
    });
    Sample::merge(parts, measure_from)
}
