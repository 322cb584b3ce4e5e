//! What both bench binaries (`pollgate`, `chaos`) need to run pollgate as a
//! child process: the runtime, where the child listens, its memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The bench's own runtime: one worker thread, so that the two cores are
/// shared between the tool and the server the same way in every run.
/// `cargo bench` passes `--bench` to every bench binary; it is dropped
/// from the arguments returned.
pub fn runtime() -> (tokio::runtime::Runtime, impl Iterator<Item = String>) {
    let args = std::env::args().filter(|a| a != "--bench");
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => (rt, args),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(2);
        }
    }
}

/// Starts this build's pollgate on `config`, logging JSON, and waits until
/// it listens: the child, its public address and its webhook address.
/// (Blocking: it reads the child's log.)
pub fn spawn_pollgate(
    config: &Path,
    show: fn(&str) -> bool,
) -> Result<(Child, SocketAddr, SocketAddr)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .arg("--config")
        .arg(config)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "warn,pollgate=info,pollgate::access=warn")
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    match listening(stderr, show) {
        Ok((public, webhook)) => Ok((child, public, webhook)),
        Err(e) => {
            let _ = child.kill();
            Err(e)
        }
    }
}

/// Reads pollgate's JSON log until it says where it listens, then keeps
/// draining it (on a thread) so the child never blocks on a full pipe;
/// the later lines `show` picks are printed.
fn listening(
    stderr: std::process::ChildStderr,
    show: fn(&str) -> bool,
) -> Result<(SocketAddr, SocketAddr)> {
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line?;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "pollgate listening" {
            let addr = |k: &str| -> Result<SocketAddr> {
                Ok(v[k].as_str().ok_or("no address in the log")?.parse()?)
            };
            let found = (addr("public")?, addr("webhook")?);
            std::thread::spawn(move || {
                for line in lines.map_while(std::result::Result::ok) {
                    if show(&line) {
                        eprintln!("pollgate: {line}");
                    }
                }
            });
            return Ok(found);
        }
        eprintln!("pollgate: {line}");
    }
    Err("pollgate exited before listening".into())
}

/// A field of `/proc/{pid}/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
