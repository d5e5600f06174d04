//! A throwaway PostgreSQL cluster (initdb into a temp dir) shared by one test binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::{bind_lifetime, free_port, scratch_dir, wait_for_port};

pub struct Postgres {
    port: u16,
    dir: PathBuf,
    /// The postmaster's process id, for [`Postgres::kill`].
    pid: u32,
}

/// PostgreSQL's server binaries: `$QUANTAID_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("QUANTAID_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (no /usr/lib/postgresql); run scripts/setup.sh")?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_string_lossy().parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).context("no PostgreSQL server binaries under /usr/lib/postgresql")
}

/// The uid/gid to run the server as: PostgreSQL refuses to run as root.
fn server_identity() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions; getpwnam returns a pointer into static storage
    // that is read before any other passwd call.
    unsafe {
        if libc::geteuid() != 0 {
            return Ok(None);
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            bail!("running as root needs a 'postgres' system user (installed with the postgresql package)");
        }
        Ok(Some(((*pw).pw_uid, (*pw).pw_gid)))
    }
}

fn run(bin: &Path, args: &[&str], identity: Option<(u32, u32)>) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    bind_lifetime(&mut cmd, libc::SIGKILL, identity);
    let out = cmd.output().with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A fresh scratch directory owned by the server's user.
fn owned_scratch_dir(kind: &str, identity: Option<(u32, u32)>) -> anyhow::Result<PathBuf> {
    let dir = scratch_dir(kind);
    if let Some((uid, gid)) = identity {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    Ok(dir)
}

fn write_owned(path: &Path, contents: &str, identity: Option<(u32, u32)>) -> anyhow::Result<()> {
    std::fs::write(path, contents)?;
    if let Some((uid, gid)) = identity {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

impl Postgres {
    /// The cluster for this test process, started on first use.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| Postgres::start().expect("start PostgreSQL for tests"))
    }

    /// Starts a new cluster. It stops when the test process exits.
    pub fn start() -> anyhow::Result<Postgres> {
        let bin = bin_dir()?;
        let identity = server_identity()?;
        let dir = owned_scratch_dir("pg", identity)?;
        let data = dir.join("data");
        run(&bin.join("initdb"), &["-D", &data.to_string_lossy(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"], identity)?;
        Self::serve(dir, identity, "")
    }

    /// Starts a streaming replica of this cluster (`pg_basebackup`, then `standby.signal`),
    /// connected as `application_name` so the primary can name it in
    /// `synchronous_standby_names`. It stops when the test process exits.
    pub fn start_standby(&self, application_name: &str) -> anyhow::Result<Postgres> {
        let bin = bin_dir()?;
        let identity = server_identity()?;
        let dir = owned_scratch_dir("pgstandby", identity)?;
        let data = dir.join("data");
        let primary_port = self.port.to_string();
        run(
            &bin.join("pg_basebackup"),
            &[
                "-h",
                self.host(),
                "-p",
                &primary_port,
                "-U",
                "postgres",
                "-D",
                &data.to_string_lossy(),
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            identity,
        )?;
        write_owned(&data.join("standby.signal"), "", identity)?;
        let standby =
            format!("primary_conninfo = 'host={} port={primary_port} user=postgres application_name={application_name}'\n", self.host());
        Self::serve(dir, identity, &standby)
    }

    /// Writes the configuration (the base settings plus `extra`) into `dir/data` and starts
    /// the server from a thread that never exits, so its death signal fires only when the
    /// whole test process goes.
    fn serve(dir: PathBuf, identity: Option<(u32, u32)>, extra: &str) -> anyhow::Result<Postgres> {
        let data = dir.join("data");
        let port = free_port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 400\n\
             shared_preload_libraries = 'pg_stat_statements'\nlog_min_messages = warning\n{extra}",
            dir.display()
        );
        write_owned(&data.join("postgresql.auto.conf"), &conf, identity)?;
        let postgres = bin_dir()?.join("postgres");
        let log = std::fs::File::create(dir.join("postgres.log"))?;
        if let Some((uid, gid)) = identity {
            std::os::unix::fs::chown(dir.join("postgres.log"), Some(uid), Some(gid))?;
        }
        let data_str = data.to_string_lossy().into_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("postgres-owner".into()).spawn(move || {
            let mut cmd = Command::new(postgres);
            cmd.args(["-D", &data_str]).stdout(Stdio::null()).stderr(log);
            bind_lifetime(&mut cmd, libc::SIGQUIT, identity);
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        })?;
        let mut child = rx.recv()?.context("spawning postgres")?;
        wait_for_port(port, Duration::from_secs(30), &mut child, "postgres")
            .with_context(|| std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default())?;
        Ok(Postgres { port, dir, pid: child.id() })
    }

    /// Kills the server as a host crash would: SIGKILL to the postmaster and every server
    /// process at once (also when they are frozen).
    pub fn kill(&self) {
        self.signal_all(libc::SIGKILL);
    }

    /// Freezes the server (SIGSTOP to every process): connections stay open and new ones
    /// are accepted by the kernel, but nothing answers, as with a hung host. Undone only
    /// by [`Postgres::kill`].
    pub fn freeze(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    fn signal_all(&self, signal: i32) {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid)).unwrap_or_default();
        let pids = std::iter::once(self.pid).chain(children.split_whitespace().filter_map(|p| p.parse().ok()));
        for pid in pids {
            // SAFETY: kill(2) on the postmaster this handle started and its children.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// Promotes a standby (`pg_promote`, waiting for the promotion to finish).
    pub async fn promote(&self) -> anyhow::Result<()> {
        let promoted: bool = self.connect("postgres").await?.query_one("SELECT pg_promote(true, 30)", &[]).await?.get(0);
        if !promoted {
            bail!("the standby on port {} was not promoted within 30 s", self.port);
        }
        Ok(())
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &'static str {
        "postgres"
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub async fn connect(&self, database: &str) -> anyhow::Result<tokio_postgres::Client> {
        let mut last = None;
        for _ in 0..100 {
            match tokio_postgres::Config::new()
                .host(self.host())
                .port(self.port)
                .user(self.user())
                .dbname(database)
                .connect(tokio_postgres::NoTls)
                .await
            {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return Ok(client);
                }
                // The server may still be starting ("the database system is starting up").
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("connect failed")))
    }

    /// A new empty database (or a copy of `template`), with a unique name.
    pub async fn create_database(&self, template: Option<&str>) -> anyhow::Result<String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("test_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let admin = self.connect("postgres").await?;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        // Copies of one template cannot start while another copy holds it; retry briefly.
        let mut attempt = 0;
        loop {
            match admin.batch_execute(&sql).await {
                Ok(()) => return Ok(name),
                Err(e) if attempt < 50 && e.to_string().contains("being accessed by other users") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
