//! Where the cores went during a scenario, from `/proc`: the backend, PostgreSQL, this
//! benchmark itself, and everything else on the (shared) machine. On two cores the
//! load generator competes with the server, so this is part of reading the numbers.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

/// The processes to account for.
#[derive(Clone, Copy)]
pub struct Pids {
    pub backend: u32,
    /// The postmaster, when we started PostgreSQL here; its children are the sessions.
    pub postmaster: Option<u32>,
}

/// CPU clock ticks consumed so far.
#[derive(Clone, Copy)]
pub struct Snapshot {
    at: Instant,
    machine: u64,
    steal: u64,
    backend: u64,
    postgres: Option<u64>,
    bench: u64,
}

/// Average cores busy between two snapshots.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub machine: f64,
    pub backend: f64,
    pub postgres: Option<f64>,
    pub bench: f64,
    /// Busy cores not accounted to the three above: other tenants, the kernel's own work.
    pub other: f64,
    /// Time the hypervisor gave our virtual cores to someone else.
    pub steal: f64,
}

/// `utime + stime` (and with `children`, `cutime + cstime`) and the parent pid of a process.
fn proc_ticks(stat_path: &Path, children: bool) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok());
    // `rest[0]` is field 3 (state), so field n is `rest[n - 3]`.
    let mut ticks = field(11)? + field(12)?;
    if children {
        ticks += field(13)? + field(14)?;
    }
    Some((ticks, field(1)? as u32))
}

/// Busy ticks of the whole machine (all but idle, iowait and steal), and steal ticks.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let v: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
    (busy, v.get(7).copied().unwrap_or(0))
}

/// The postmaster's own time plus its reaped children's, plus the live sessions'.
fn postgres_ticks(postmaster: u32) -> Option<u64> {
    let (mut total, _) = proc_ticks(&Path::new("/proc").join(postmaster.to_string()).join("stat"), true)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Some((ticks, ppid)) = proc_ticks(&entry.path().join("stat"), false) {
            if ppid == postmaster {
                total += ticks;
            }
        }
    }
    Some(total)
}

pub fn snapshot(p: Pids) -> Snapshot {
    let ticks = |pid: u32| proc_ticks(&Path::new("/proc").join(pid.to_string()).join("stat"), false).map_or(0, |t| t.0);
    let (machine, steal) = machine_ticks();
    Snapshot {
        at: Instant::now(),
        machine,
        steal,
        backend: ticks(p.backend),
        postgres: p.postmaster.and_then(postgres_ticks),
        bench: proc_ticks(Path::new("/proc/self/stat"), false).map_or(0, |t| t.0),
    }
}

pub fn usage(a: &Snapshot, b: &Snapshot) -> Usage {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let secs = (b.at - a.at).as_secs_f64().max(1e-9);
    let cores = |x: u64, y: u64| y.saturating_sub(x) as f64 / hz / secs;
    let machine = cores(a.machine, b.machine);
    let backend = cores(a.backend, b.backend);
    let postgres = a.postgres.zip(b.postgres).map(|(x, y)| cores(x, y));
    let bench = cores(a.bench, b.bench);
    let other = (machine - backend - postgres.unwrap_or(0.0) - bench).max(0.0);
    Usage { machine, backend, postgres, bench, other, steal: cores(a.steal, b.steal) }
}

impl Usage {
    pub fn json(&self) -> Value {
        let r = |x: f64| (x * 100.0).round() / 100.0;
        json!({
            "machine": r(self.machine),
            "backend": r(self.backend),
            "postgres": self.postgres.map(r),
            "bench": r(self.bench),
            "other": r(self.other),
            "steal": r(self.steal),
        })
    }
}

/// The postmaster's pid, from the first line of `postmaster.pid` in the data directory.
pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
}
