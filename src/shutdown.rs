//! Signals mapped to intents (pingora's model): SIGTERM and SIGINT stop,
//! SIGHUP reloads. Everything that runs long holds a clone of the one
//! [`CancellationToken`] and selects on it; nothing polls a flag.

use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What shutdown is allowed to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// After SIGTERM, the time in-flight proxied requests get to finish.
    pub drain_timeout: std::time::Duration,
}

/// Exit code when a second stop signal cuts the drain short.
pub const EXIT_FORCED: i32 = 130;

/// The stop and reload signal streams, registered up front: once this
/// exists, a signal is queued for [`Signals::watch`] instead of taking its
/// default action (SIGHUP's default would kill the process), so it is
/// installed before pollgate says it is listening.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Listens for signals until the process ends.
    /// - SIGTERM (Kubernetes, systemd, `kill`) and SIGINT (Ctrl-C): cancel
    ///   `shutdown`, which starts the graceful stop; a second one exits at once.
    /// - SIGHUP (`systemctl reload`, `kill -HUP`): notify `reload`.
    pub async fn watch(mut self, shutdown: CancellationToken, reload: Arc<Notify>) {
        loop {
            let name = tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
                _ = self.hup.recv() => {
                    reload.notify_one();
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                warn!(
                    signal = name,
                    "second stop signal: exiting without waiting for the drain"
                );
                // The line above is queued for the log writer: write it out.
                crate::logging::finish();
                std::process::exit(EXIT_FORCED);
            }
            info!(
                signal = name,
                "stopping: held polls are answered, in-flight requests drain"
            );
            shutdown.cancel();
        }
    }
}
