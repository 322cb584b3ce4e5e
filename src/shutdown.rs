//! Signals mapped to intents (pingora's model): SIGTERM and SIGINT stop,
//! SIGHUP reloads. Everything that runs long holds a clone of the one
//! [`CancellationToken`] and selects on it; nothing polls a flag.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Exit code when a second stop signal cuts the drain short.
pub const EXIT_FORCED: i32 = 130;

/// Listens for signals until the process ends.
/// - SIGTERM (Kubernetes, systemd, `kill`) and SIGINT (Ctrl-C): cancel
///   `shutdown`, which starts the graceful stop; a second one exits at once.
/// - SIGHUP (`systemctl reload`, `kill -HUP`): notify `reload`.
pub async fn watch_signals(shutdown: CancellationToken, reload: Arc<Notify>) {
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            error!("cannot install signal handlers; stop pollgate with SIGKILL");
            return;
        }
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                reload.notify_one();
                continue;
            }
        };
        if shutdown.is_cancelled() {
            warn!(
                signal = name,
                "second stop signal: exiting without waiting for the drain"
            );
            std::process::exit(EXIT_FORCED);
        }
        info!(
            signal = name,
            "stopping: held polls are answered, in-flight requests drain"
        );
        shutdown.cancel();
    }
}
