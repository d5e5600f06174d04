//! What is benchmarked: a PostgreSQL database and the release backend as a child process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use quantaid_testkit::{free_port, ChildGuard, Postgres};

use super::options::Options;

/// The backend's environment variables that the benchmark sets, as
/// `identity-backend/src/config.rs` and `runtime/src/settings.rs` name them. They are
/// written out here so that the load tool does not build the backend;
/// `names_are_the_backends` reads those files and fails when a name there changes, so a
/// rename cannot silently benchmark a default.
mod env {
    pub const LISTEN_ADDR: &str = "QUANTAID_LISTEN_ADDR";
    pub const METRICS_ADDR: &str = "QUANTAID_METRICS_ADDR";
    pub const DB_HOST: &str = "QUANTAID_DB_HOST";
    pub const DB_PORT: &str = "QUANTAID_DB_PORT";
    pub const DB_USER: &str = "QUANTAID_DB_USER";
    pub const DB_PASSWORD: &str = "QUANTAID_DB_PASSWORD";
    pub const DB_NAME: &str = "QUANTAID_DB_NAME";
    pub const DB_POOL_MIN: &str = "QUANTAID_DB_POOL_MIN";
    pub const DB_POOL_MAX: &str = "QUANTAID_DB_POOL_MAX";
    pub const BOOTSTRAP_ADMIN_TOKEN: &str = "QUANTAID_BOOTSTRAP_ADMIN_TOKEN";
    pub const ARGON2_MEMORY_KIB: &str = "QUANTAID_ARGON2_MEMORY_KIB";
    pub const ARGON2_ITERATIONS: &str = "QUANTAID_ARGON2_ITERATIONS";
    pub const ARGON2_PARALLELISM: &str = "QUANTAID_ARGON2_PARALLELISM";
    pub const PASSWORD_HASH_WORKERS: &str = "QUANTAID_PASSWORD_HASH_WORKERS";
    pub const REDIS_HOST: &str = "QUANTAID_REDIS_HOST";
    pub const LOG_LEVEL: &str = "QUANTAID_LOG_LEVEL";
    pub const SHUTDOWN_GRACE_SECS: &str = "QUANTAID_SHUTDOWN_GRACE_SECS";
    /// `QUANTAID_REDIS_HOST`'s value for "no Redis" (`runtime/src/settings.rs`).
    pub const REDIS_DISABLED: &str = "none";
}

/// Where the backend's database is. A throwaway cluster, when we started one, lives as
/// long as this process (testkit ties the server's life to ours).
pub struct Database {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub name: String,
    /// `server_version`, `fsync` and `synchronous_commit`: they decide write throughput.
    pub settings: String,
    /// The postmaster's pid when the cluster is ours, for CPU accounting.
    pub postmaster: Option<u32>,
}

impl Database {
    pub async fn open(options: &Options) -> anyhow::Result<Database> {
        let mut db = match &options.database_url {
            Some(url) => from_url(url)?,
            None => {
                let pg = Postgres::start().context("starting a throwaway PostgreSQL (see testkit)")?;
                let name = pg.create_database(None).await?;
                let db = Database {
                    host: pg.host().into(),
                    port: pg.port(),
                    user: pg.user().into(),
                    password: String::new(),
                    name,
                    settings: String::new(),
                    postmaster: super::cpu::postmaster_pid(&pg.dir().join("data")),
                };
                std::mem::forget(pg); // nothing to drop: the server stops when we exit
                db
            }
        };
        let s = crate::seed::database_settings(&crate::seed::connect(&db.config()).await?).await?;
        db.settings = format!("server_version={} fsync={} synchronous_commit={}", s.version, s.fsync, s.synchronous_commit);
        Ok(db)
    }

    pub fn config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host).port(self.port).user(&self.user).dbname(&self.name);
        if !self.password.is_empty() {
            cfg.password(&self.password);
        }
        cfg
    }
}

fn from_url(url: &str) -> anyhow::Result<Database> {
    let cfg = tokio_postgres::Config::from_str(url).context("--database-url")?;
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "127.0.0.1".into(),
    };
    Ok(Database {
        host,
        port: cfg.get_ports().first().copied().unwrap_or(5432),
        user: cfg.get_user().unwrap_or("postgres").into(),
        password: cfg.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default(),
        name: cfg.get_dbname().unwrap_or("quantaid").into(),
        settings: String::new(),
        postmaster: None,
    })
}

/// The backend process. Dropping it stops the process (SIGTERM, then SIGKILL); it also
/// gets SIGKILL if this process dies first (testkit's `ChildGuard`), so a killed
/// benchmark leaves no orphan behind.
pub struct Backend {
    child: ChildGuard,
    pub url: String,
    pub log: PathBuf,
}

/// `quantaid-backend` in the same target directory as this binary.
pub fn default_backend_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the load tool's binary has no parent directory")?;
    Ok(dir.join("quantaid-backend"))
}

impl Backend {
    pub async fn start(bin: &Path, db: &Database, admin_token: &str, options: &Options, hash_workers: usize) -> anyhow::Result<Backend> {
        if !bin.exists() {
            bail!("{} not found: build it with `cargo build --release -p quantaid-backend`", bin.display());
        }
        let (api_port, metrics_port) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("quantaid-bench-backend-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        // A clean environment: a stray QUANTAID_* in the caller's shell must not change
        // what is measured. Every setting that matters is explicit here.
        cmd.arg("serve")
            .env_clear()
            .env(env::LISTEN_ADDR, format!("127.0.0.1:{api_port}"))
            .env(env::METRICS_ADDR, format!("127.0.0.1:{metrics_port}"))
            .env(env::DB_HOST, &db.host)
            .env(env::DB_PORT, db.port.to_string())
            .env(env::DB_USER, &db.user)
            .env(env::DB_PASSWORD, &db.password)
            .env(env::DB_NAME, &db.name)
            .env(env::DB_POOL_MIN, options.pool_min.to_string())
            .env(env::DB_POOL_MAX, options.pool_max.to_string())
            .env(env::BOOTSTRAP_ADMIN_TOKEN, admin_token)
            .env(env::ARGON2_MEMORY_KIB, super::ceiling::M_COST_KIB.to_string())
            .env(env::ARGON2_ITERATIONS, super::ceiling::T_COST.to_string())
            .env(env::ARGON2_PARALLELISM, super::ceiling::P_COST.to_string())
            .env(env::PASSWORD_HASH_WORKERS, hash_workers.to_string())
            // No caching proxy here, so no Redis to publish revocations to.
            .env(env::REDIS_HOST, env::REDIS_DISABLED)
            .env(env::LOG_LEVEL, "warn")
            .env(env::SHUTDOWN_GRACE_SECS, "2")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // Spawned from the runtime's main thread, which lives as long as the process.
        let child = ChildGuard::spawn(&mut cmd).with_context(|| format!("spawning {}", bin.display()))?;
        let mut backend = Backend { child, url: format!("http://127.0.0.1:{api_port}"), log };
        backend.wait_ready().await?;
        Ok(backend)
    }

    /// Polls `GET /ready` for up to 60 s (migrations run at start-up).
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/ready", self.url)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.0.try_wait()? {
                bail!("the backend exited during start-up ({status}); its log:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the backend was not ready within 60 s; its log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Lines the backend logged (it runs at `warn`, so each is a warning or an error).
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log).map(|t| t.lines().count()).unwrap_or(0)
    }
}

impl Drop for Backend {
    /// A graceful stop first; the guard's own drop then kills what is left.
    fn drop(&mut self) {
        self.child.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_gives_each_part() {
        let db = from_url("postgres://app:s3cret@127.0.0.1:5433/ident").unwrap();
        assert_eq!((db.host.as_str(), db.port, db.user.as_str()), ("127.0.0.1", 5433, "app"));
        assert_eq!((db.password.as_str(), db.name.as_str()), ("s3cret", "ident"));
        let db = from_url("host=localhost user=postgres dbname=q").unwrap();
        assert_eq!((db.host.as_str(), db.port, db.name.as_str()), ("localhost", 5432, "q"));
        assert!(from_url("postgres://[bad").is_err());
    }

    /// Each name above, as the backend's `config.rs` or the shared `settings.rs` declares it.
    #[test]
    fn names_are_the_backends() {
        let read = |path: &str| std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).expect(path);
        let config = read("identity-backend/src/config.rs");
        let settings = read("runtime/src/settings.rs");
        let names = [
            ("LISTEN_ADDR", env::LISTEN_ADDR),
            ("METRICS_ADDR", env::METRICS_ADDR),
            ("DB_HOST", env::DB_HOST),
            ("DB_PORT", env::DB_PORT),
            ("DB_USER", env::DB_USER),
            ("DB_PASSWORD", env::DB_PASSWORD),
            ("DB_NAME", env::DB_NAME),
            ("DB_POOL_MIN", env::DB_POOL_MIN),
            ("DB_POOL_MAX", env::DB_POOL_MAX),
            ("BOOTSTRAP_ADMIN_TOKEN", env::BOOTSTRAP_ADMIN_TOKEN),
            ("ARGON2_MEMORY_KIB", env::ARGON2_MEMORY_KIB),
            ("ARGON2_ITERATIONS", env::ARGON2_ITERATIONS),
            ("ARGON2_PARALLELISM", env::ARGON2_PARALLELISM),
            ("PASSWORD_HASH_WORKERS", env::PASSWORD_HASH_WORKERS),
            ("REDIS_HOST", env::REDIS_HOST),
            ("LOG_LEVEL", env::LOG_LEVEL),
            ("SHUTDOWN_GRACE_SECS", env::SHUTDOWN_GRACE_SECS),
        ];
        for (name, value) in names {
            let declaration = format!("pub const {name}: &str = \"{value}\";");
            assert!(
                config.contains(&declaration) || settings.contains(&declaration),
                "neither identity-backend/src/config.rs nor runtime/src/settings.rs has `{declaration}`"
            );
        }
        let declaration = format!("pub const REDIS_DISABLED: &str = \"{}\";", env::REDIS_DISABLED);
        assert!(settings.contains(&declaration), "runtime/src/settings.rs no longer has `{declaration}`");
    }
}
