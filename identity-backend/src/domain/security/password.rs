//! argon2id password hashing on a bounded pool of blocking threads (docs/design.md, invariant 8).
//!
//! A hash costs tens of milliseconds of CPU and 19 MiB of memory, so it never runs on
//! the async runtime. At most `workers` hashes run at once and at most `queue` more
//! wait; past that the caller gets a 503 at once instead of queueing without end.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

use crate::config::Argon2Config;
use crate::error::{ApiError, ApiResult};

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// Admission: running plus waiting hashes.
    admission: Arc<Semaphore>,
    /// Running hashes.
    workers: Arc<Semaphore>,
    /// Verified against when the user does not exist, so an unknown username costs the
    /// same time as a wrong password (no user enumeration by timing).
    dummy_hash: Arc<str>,
    rejections: prometheus::IntCounter,
}

/// The password policy: length bounds, and not only whitespace.
pub fn check_policy(password: &str) -> ApiResult<()> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(ApiError::InvalidRequest(format!("password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")));
    }
    if password.trim().is_empty() {
        return Err(ApiError::InvalidRequest("password must not be only whitespace".into()));
    }
    Ok(())
}

impl PasswordHasher {
    pub fn new(cfg: &Argon2Config, workers: usize, queue: usize, rejections: prometheus::IntCounter) -> anyhow::Result<Self> {
        let params =
            Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None).map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_blocking(&argon2, "quantaid-dummy-password")?;
        Ok(PasswordHasher {
            argon2,
            admission: Arc::new(Semaphore::new(workers + queue)),
            workers: Arc::new(Semaphore::new(workers)),
            dummy_hash: dummy_hash.into(),
            rejections,
        })
    }

    /// Runs `f` on the blocking pool once a worker is free, or refuses at once when the
    /// queue is full.
    async fn on_pool<T: Send + 'static>(&self, f: impl FnOnce(&Argon2<'static>) -> T + Send + 'static) -> ApiResult<T> {
        let Ok(_admitted) = self.admission.clone().try_acquire_owned() else {
            self.rejections.inc();
            return Err(ApiError::unavailable("password verification is at capacity"));
        };
        let _worker = self.workers.clone().acquire_owned().await.map_err(ApiError::internal)?;
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || f(&argon2)).await.map_err(ApiError::internal)
    }

    pub async fn hash(&self, password: String) -> ApiResult<String> {
        self.on_pool(move |a| hash_blocking(a, &password)).await?.map_err(ApiError::internal)
    }

    /// Verifies `password` against `stored`, or against a dummy hash when there is no
    /// user, so both paths take the same time. Returns whether it matched.
    pub async fn verify(&self, password: String, stored: Option<String>) -> ApiResult<bool> {
        let dummy = self.dummy_hash.clone();
        self.on_pool(move |a| {
            let (phc, real) = match &stored {
                Some(h) => (h.as_str(), true),
                None => (&*dummy, false),
            };
            // argon2 compares the computed hash in constant time.
            let ok = PasswordHash::new(phc).map(|h| a.verify_password(password.as_bytes(), &h).is_ok()).unwrap_or(false);
            ok && real
        })
        .await
    }
}

fn hash_blocking(argon2: &Argon2<'_>, password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(workers: usize, queue: usize) -> PasswordHasher {
        let cfg = Argon2Config { memory_kib: 19456, iterations: 2, parallelism: 1 };
        PasswordHasher::new(&cfg, workers, queue, prometheus::IntCounter::new("r", "r").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn hashes_with_owasp_argon2id_and_verifies() {
        let h = hasher(1, 4);
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify("correct horse".into(), Some(phc.clone())).await.unwrap());
        assert!(!h.verify("wrong horse".into(), Some(phc)).await.unwrap());
        assert!(!h.verify("quantaid-dummy-password".into(), None).await.unwrap(), "no user never verifies");
    }

    #[tokio::test]
    async fn full_queue_refuses_instead_of_waiting() {
        let h = hasher(1, 1);
        let jobs: Vec<_> = (0..8).map(|_| h.verify("password1".into(), None)).collect();
        // join_all polls every future once before any finishes, so admission is decided up front.
        let results = futures::future::join_all(jobs).await;
        let refused = results.iter().filter(|r| matches!(r, Err(ApiError::Unavailable { .. }))).count();
        assert_eq!(refused, 6, "only workers + queue = 2 may be admitted");
        assert_eq!(h.rejections.get(), 6);
    }

    #[test]
    fn policy() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("        ").is_err());
        assert!(check_policy(&"x".repeat(129)).is_err());
        assert!(check_policy("long enough").is_ok());
    }
}
