//! A throwaway `redis-server` that a test can kill and restart on the same port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

use crate::process::{bind_lifetime, free_port, scratch_dir, wait_for_port};

pub struct Redis {
    port: u16,
    dir: PathBuf,
    /// The primary's port when this server is its replica.
    replica_of: Option<u16>,
    child: Mutex<Option<Child>>,
}

impl Redis {
    pub fn start() -> anyhow::Result<Redis> {
        let redis = Redis { port: free_port(), dir: scratch_dir("redis"), replica_of: None, child: Mutex::new(None) };
        redis.restart()?;
        Ok(redis)
    }

    /// A replica of `primary` (`replicaof`); it copies the primary's data once started.
    pub fn start_replica_of(primary: &Redis) -> anyhow::Result<Redis> {
        let redis = Redis { port: free_port(), dir: scratch_dir("redis"), replica_of: Some(primary.port), child: Mutex::new(None) };
        redis.restart()?;
        Ok(redis)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port, empty.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.kill();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(self.replica_of.iter().flat_map(|port| ["--replicaof".to_string(), "127.0.0.1".to_string(), port.to_string()]))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        bind_lifetime(&mut cmd, libc::SIGKILL, None);
        let mut child = cmd.spawn().context("spawning redis-server (is it installed? run scripts/setup.sh)")?;
        wait_for_port(self.port, Duration::from_secs(10), &mut child, "redis-server")?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
