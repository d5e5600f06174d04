//! What is benchmarked: a PostgreSQL database and the release backend as a child process.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use quantaid_backend::config as env;
use quantaid_testkit::{free_port, Postgres};

use crate::options::Options;

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
                    postmaster: crate::cpu::postmaster_pid(&pg.dir().join("data")),
                };
                std::mem::forget(pg); // nothing to drop: the server stops when we exit
                db
            }
        };
        db.settings = db.read_settings().await?;
        Ok(db)
    }

    async fn read_settings(&self) -> anyhow::Result<String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host).port(self.port).user(&self.user).dbname(&self.name);
        if !self.password.is_empty() {
            cfg.password(&self.password);
        }
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.context("connecting to PostgreSQL")?;
        let driver = tokio::spawn(conn);
        let mut parts = Vec::new();
        for setting in ["server_version", "fsync", "synchronous_commit"] {
            let row = client.query_one(&format!("SHOW {setting}"), &[]).await?;
            parts.push(format!("{setting}={}", row.get::<_, String>(0)));
        }
        drop(client);
        let _ = driver.await;
        Ok(parts.join(" "))
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

/// The backend process. Dropping it stops the process (SIGTERM, then SIGKILL).
pub struct Backend {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

/// `quantaid-backend` in the same target directory as this binary.
pub fn default_backend_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench binary has no parent directory")?;
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
            .env(env::ARGON2_MEMORY_KIB, crate::ceiling::M_COST_KIB.to_string())
            .env(env::ARGON2_ITERATIONS, crate::ceiling::T_COST.to_string())
            .env(env::ARGON2_PARALLELISM, crate::ceiling::P_COST.to_string())
            .env(env::PASSWORD_HASH_WORKERS, hash_workers.to_string())
            // No caching proxy here, so no Redis to publish revocations to.
            .env(env::REDIS_HOST, env::REDIS_DISABLED)
            .env(env::LOG_LEVEL, "warn")
            .env(env::SHUTDOWN_GRACE_SECS, "2")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // SAFETY: prctl is async-signal-safe. The backend gets SIGKILL if this thread
        // (the runtime's main thread, which lives as long as the process) goes away, so a
        // killed bench leaves no orphan behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("spawning {}", bin.display()))?;
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
            if let Some(status) = self.child.try_wait()? {
                bail!("the backend exited during start-up ({status}); its log:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the backend was not ready within 60 s; its log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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
}
