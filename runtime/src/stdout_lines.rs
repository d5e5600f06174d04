//! Log lines reach stdout in batches: a request appends its line to a shared buffer
//! (a copy under a lock, no system call, no thread wake-up), and a thread of its own
//! writes the buffer out every [`FLUSH_EVERY`]. Writing each line as it came cost a
//! `write` per request, and handing each line to a writer thread cost a wake-up per
//! request, which was dearer still (docs/benchmarks.md, "The access log"). When stdout
//! cannot keep up and the buffer is full, lines are dropped and counted
//! (`quantaid_log_lines_dropped_total`, exported by `process::ProcessCollector`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

/// How late a line may reach stdout.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Most bytes waiting to be written; lines beyond are dropped.
const MAX_PENDING_BYTES: usize = 8 << 20;

static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static DROPPED: AtomicU64 = AtomicU64::new(0);
static FLUSHER: Once = Once::new();
static FLUSHING: AtomicBool = AtomicBool::new(false);

/// Lines dropped because stdout could not keep up, since start.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Queues one line (with its newline) for stdout.
pub fn write(line: &[u8]) {
    FLUSHER.call_once(|| {
        let started = std::thread::Builder::new().name("log-flush".into()).spawn(|| loop {
            std::thread::sleep(FLUSH_EVERY);
            flush();
        });
        FLUSHING.store(started.is_ok(), Ordering::Release);
    });
    if !FLUSHING.load(Ordering::Acquire) {
        let _ = std::io::stdout().lock().write_all(line);
        return;
    }
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    if pending.len() + line.len() > MAX_PENDING_BYTES {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    pending.extend_from_slice(line);
}

/// Writes out every queued line; also called when the process stops.
pub fn flush() {
    let batch = {
        let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            return;
        }
        let capacity = pending.capacity();
        std::mem::replace(&mut *pending, Vec::with_capacity(capacity))
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&batch);
    let _ = stdout.flush();
}
