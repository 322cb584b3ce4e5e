//! Logs: tracing events formatted on the thread that logs them, written to
//! stderr by a thread of their own.
//!
//! Why a writer thread: with stderr written in place, every access line was
//! a `write` system call on a serving thread, about 13 µs of CPU each (fan-out
//! with the access log on took twice the CPU). The writer thread writes
//! through a buffer, one system call per batch of lines.
//!
//! Lossy on purpose: when stderr cannot keep up (a stuck pipe, a log shipper
//! that stopped reading), lines past `defaults::LOG_QUEUE_LINES` are dropped
//! and counted instead of stalling every request behind a blocked `write`.

use std::io::BufWriter;
use std::sync::OnceLock;

use parking_lot::Mutex;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::defaults::{LOG_BUFFER_BYTES, LOG_QUEUE_LINES};

/// The writer thread's handle: dropping it writes out what is queued.
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Lines dropped so far (set once `init` ran).
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber (level from `RUST_LOG`, default `info`).
pub fn init(format: Format) {
    let stderr = BufWriter::with_capacity(LOG_BUFFER_BYTES, std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("pollgate-log")
        .finish(stderr);
    let _ = DROPPED.set(writer.error_counter());
    *WRITER.lock() = Some(guard);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // tracing-subscriber reports a failed write with `eprintln!`, which
        // panics when stderr is a closed pipe: a log reader that went away
        // would kill whatever task logged next (the signal watcher included).
        .log_internal_errors(false);
    match format {
        Format::Text => builder.init(),
        Format::Json => builder.json().flatten_event(true).init(),
    }
}

/// Lines dropped because stderr could not keep up (0 without `init`: tests
/// and embedders log their own way).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |d| d.dropped_lines() as u64)
}

/// Writes out every queued line and stops the writer thread; call before
/// the process exits. Later events are not written.
pub fn finish() {
    let guard = WRITER.lock().take();
    drop(guard);
}
