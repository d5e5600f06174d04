//! Process metrics for both sidecars, read from `/proc` and the cgroup at scrape time:
//! the standard `process_*` family (CPU, memory, file descriptors, threads, start time)
//! and `quantaid_memory_limit_bytes`, the memory the container may use, so that memory
//! use can be compared with its limit (the HighMemoryUsage alert,
//! docs/operations/runbook.md).
//!
//! The `prometheus` crate's own process collector needs the `procfs` crate; this one
//! reads the few files it needs itself. Off Linux every value is simply absent.

use std::fs;

use nix::unistd::SysconfVar;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, IntCounter, IntGauge, Opts};

pub struct ProcessCollector {
    descs: Vec<Desc>,
    cpu_seconds: Counter,
    resident_memory: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    threads: IntGauge,
    start_time: IntGauge,
    memory_limit: IntGauge,
    log_lines_dropped: IntCounter,
}

impl ProcessCollector {
    /// Fails only if a metric name or help text were invalid.
    pub fn new() -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let collector = ProcessCollector {
            descs: Vec::new(),
            cpu_seconds: Counter::with_opts(Opts::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            ))?,
            resident_memory: gauge("process_resident_memory_bytes", "Resident memory size in bytes.")?,
            virtual_memory: gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.")?,
            open_fds: gauge("process_open_fds", "Number of open file descriptors.")?,
            max_fds: gauge("process_max_fds", "Maximum number of open file descriptors.")?,
            threads: gauge("process_threads", "Number of OS threads in the process.")?,
            start_time: gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )?,
            memory_limit: gauge(
                "quantaid_memory_limit_bytes",
                "Memory this process may use: its cgroup's limit (the container's memory limit), or the machine's memory when there is none.",
            )?,
            log_lines_dropped: IntCounter::with_opts(Opts::new(
                "quantaid_log_lines_dropped_total",
                "Log lines dropped because stdout could not take them as fast as they came (crate::stdout_lines).",
            ))?,
        };
        let descs = collector.parts().iter().flat_map(|c| c.desc().into_iter().cloned()).collect();
        Ok(ProcessCollector { descs, ..collector })
    }

    fn parts(&self) -> [&dyn Collector; 9] {
        [
            &self.cpu_seconds,
            &self.resident_memory,
            &self.virtual_memory,
            &self.open_fds,
            &self.max_fds,
            &self.threads,
            &self.start_time,
            &self.memory_limit,
            &self.log_lines_dropped,
        ]
    }

    /// Reads the current values; anything unreadable keeps its last value.
    fn sample(&self) {
        let page_size = sysconf(SysconfVar::PAGE_SIZE);
        let ticks_per_second = sysconf(SysconfVar::CLK_TCK);
        if let Some(stat) = fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(parse_stat) {
            if let Some(ticks_per_second) = ticks_per_second {
                let cpu = (stat.utime + stat.stime) as f64 / ticks_per_second as f64;
                // The counter only goes up: add what was spent since the last scrape.
                let delta = cpu - self.cpu_seconds.get();
                if delta > 0.0 {
                    self.cpu_seconds.inc_by(delta);
                }
                if let Some(boot) = boot_time() {
                    self.start_time.set(boot + (stat.start_ticks / ticks_per_second as u64) as i64);
                }
            }
            self.threads.set(stat.threads);
            self.virtual_memory.set(stat.vsize as i64);
            if let Some(page_size) = page_size {
                self.resident_memory.set(stat.rss_pages * page_size);
            }
        }
        if let Ok(dir) = fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        if let Some(max) = fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(parse_max_fds) {
            self.max_fds.set(max);
        }
        if let Some(limit) = memory_limit() {
            self.memory_limit.set(limit);
        }
        let dropped = crate::stdout_lines::dropped();
        self.log_lines_dropped.inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.sample();
        self.parts().iter().flat_map(|c| c.collect()).collect()
    }
}

/// A positive system limit, or `None` when the system does not know it.
// `c_long` is `i64` here but `i32` on 32-bit targets, where the conversion is not a no-op.
#[allow(clippy::useless_conversion)]
fn sysconf(var: SysconfVar) -> Option<i64> {
    nix::unistd::sysconf(var).ok().flatten().map(i64::from).filter(|v| *v > 0)
}

struct Stat {
    utime: u64,
    stime: u64,
    threads: i64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: i64,
}

/// `/proc/self/stat` (proc(5)): the command name, in parentheses, may hold spaces, so
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is f[0]; field N is f[N - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: num(14)?,
        stime: num(15)?,
        threads: num(20)? as i64,
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)? as i64,
    })
}

fn parse_max_fds(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn boot_time() -> Option<i64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

/// The cgroup v2 `memory.max` (or v1 `memory.limit_in_bytes`) of this process's
/// cgroup, else the machine's memory.
fn memory_limit() -> Option<i64> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let from_cgroup = cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = match controllers {
            "" => "memory.max",
            c if c.split(',').any(|c| c == "memory") => "memory.limit_in_bytes",
            _ => return None,
        };
        let dir = if controllers.is_empty() { "/sys/fs/cgroup".to_string() } else { "/sys/fs/cgroup/memory".to_string() };
        // Inside a container the cgroup is usually mounted at the root of the mount.
        [format!("{dir}{path}/{file}"), format!("{dir}/{file}")]
            .iter()
            .find_map(|p| fs::read_to_string(p).ok())
            .and_then(|v| parse_limit(&v))
    });
    from_cgroup.or_else(|| {
        let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
        let kib: i64 = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// A cgroup limit in bytes; `max` (v2) or a value near `i64::MAX` (v1) means none.
fn parse_limit(text: &str) -> Option<i64> {
    let value: i64 = text.trim().parse().ok()?;
    (value < 1 << 60).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let line = "4242 (quantaid (x) proxy) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 12 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.utime, s.stime, s.threads, s.start_ticks, s.vsize, s.rss_pages), (250, 75, 12, 123456, 104857600, 2560));
    }

    #[test]
    fn parses_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        assert_eq!(parse_max_fds(limits), Some(1048576));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("268435456\n"), Some(268435456));
    }

    #[test]
    fn collects_this_process() {
        let c = ProcessCollector::new().unwrap();
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &c.collect(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
            line[name.len() + 1..].parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("quantaid_memory_limit_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_start_time_seconds") > 1_600_000_000.0);
        assert!(value("process_threads") >= 1.0);
        assert_eq!(value("quantaid_log_lines_dropped_total"), 0.0);
        assert_eq!(c.desc().len(), 9);
    }
}
