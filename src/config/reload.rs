//! Hot reload: watch the config file (and SIGHUP), validate, hand over.
//!
//! This task is the only producer of new [`Config`]s after start. It never
//! applies a file it could not fully validate, and it waits for change events
//! to go quiet first, because editors and `cp` write a file in several steps.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Config;

/// Outcome counters, observable by metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadStats {
    /// Increases by one for every config put in force (the first is 0).
    pub generation: u64,
    pub ok: u64,
    pub failed: u64,
}

/// A watch on the config file, set up before the server starts so no
/// change made after `start` returns can be missed.
pub struct FileWatch {
    path: PathBuf,
    events: mpsc::Receiver<()>,
    /// Kept alive with the watch; dropping it stops the events.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl FileWatch {
    pub fn new(path: PathBuf) -> FileWatch {
        let (tx, events) = mpsc::channel::<()>(16);
        let watcher = match watch(&path, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot watch the config file; reload on SIGHUP only");
                None
            }
        };
        FileWatch {
            path,
            events,
            _watcher: watcher,
        }
    }
}

/// Calls `apply` with the outcome of each reload (a file change, or
/// `sighup` notified by the signal handler) until `shutdown`.
pub async fn run(
    watch: FileWatch,
    debounce: Duration,
    sighup: Arc<Notify>,
    shutdown: CancellationToken,
    mut apply: impl FnMut(Result<Config, super::ConfigErrors>),
) {
    let FileWatch {
        path,
        mut events,
        _watcher,
    } = watch;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sighup.notified() => {
                info!(path = %path.display(), "SIGHUP: reloading config");
            }
            Some(()) = events.recv() => {
                // Debounce: keep waiting while events keep coming.
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(debounce) => break,
                        Some(()) = events.recv() => continue,
                    }
                }
            }
        }
        let path = path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        match loaded {
            Ok(result) => apply(result),
            Err(e) => warn!(error = %e, "config load task failed"),
        }
    }
}

/// Watches the file's directory, not the file: editors replace a file by
/// renaming a new one over it, which ends a watch on the old inode.
fn watch(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let name = path.file_name().map(|n| n.to_owned());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            // A full queue already holds a wakeup; nothing is lost by dropping this one.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
