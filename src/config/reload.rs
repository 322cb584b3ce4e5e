//! Hot reload: watch the config file (and the certificate files it names,
//! and SIGHUP), validate, hand over.
//!
//! This task is the only producer of new [`Config`]s after start. It never
//! applies a file it could not fully validate, and it waits for change events
//! to go quiet first, because editors, `cp` and certbot write files in
//! several steps.

use std::collections::HashSet;
use std::ffi::OsString;
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

/// A watch on a set of files, set up before the server starts so no change
/// made after `start` returns can be missed.
pub struct FileWatch {
    files: Vec<PathBuf>,
    events: mpsc::Receiver<()>,
    /// Kept alive with the watch; dropping it stops the events.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl FileWatch {
    pub fn new(files: Vec<PathBuf>) -> FileWatch {
        let (tx, events) = mpsc::channel::<()>(16);
        let watcher = match watch(&files, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch the config files; reload on SIGHUP only");
                None
            }
        };
        FileWatch {
            files,
            events,
            _watcher: watcher,
        }
    }

    /// Resolves once a change was seen and no further one came for `debounce`.
    async fn changed(&mut self, debounce: Duration) {
        if self.events.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(debounce) => return,
                Some(()) = self.events.recv() => continue,
            }
        }
    }
}

/// Reloads `path` on a change of any watched file, or when `sighup` is
/// notified, until `shutdown`; `apply` gets each outcome and returns the
/// files to watch from then on (the config file plus what it names).
pub async fn run(
    path: PathBuf,
    mut watch: FileWatch,
    debounce: Duration,
    sighup: Arc<Notify>,
    shutdown: CancellationToken,
    mut apply: impl FnMut(Result<Config, super::ConfigErrors>) -> Vec<PathBuf>,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sighup.notified() => info!(path = %path.display(), "SIGHUP: reloading config"),
            _ = watch.changed(debounce) => {}
        }
        let load_path = path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&load_path)).await;
        let files = match loaded {
            Ok(result) => apply(result),
            Err(e) => {
                warn!(error = %e, "config load task failed");
                continue;
            }
        };
        if files != watch.files {
            watch = FileWatch::new(files);
        }
    }
}

/// Watches the files' directories, not the files: editors and certbot
/// replace a file by renaming a new one over it (or re-pointing a symlink),
/// which ends a watch on the old inode.
fn watch(files: &[PathBuf], tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let names: HashSet<OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_owned()))
        .collect();
    let dirs: HashSet<PathBuf> = files.iter().map(|f| dir_of(f)).collect();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
        {
            // A full queue already holds a wakeup; nothing is lost by dropping this one.
            let _ = tx.try_send(());
        }
    })?;
    for dir in dirs {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}
