//! Serving threads: one single-threaded runtime per thread, each accepting
//! on its own public socket, and the rule that maps a thread to the state
//! kept per thread (upstream pools, wakeup relays).
//!
//! Its own module because three others keep per-thread state (the broker,
//! the proxy, the server): none of them should import another for it.

use std::cell::Cell;

use tokio::sync::oneshot;
use tracing::error;

thread_local! {
    static SERVING_THREAD: Cell<usize> = const { Cell::new(0) };
}

/// Which serving thread this is: `n` on the thread of `spawn_thread(n, …)`,
/// 0 anywhere else (the main runtime serves the first socket). State kept
/// per thread (the upstream pools) is picked by it, so that a request and
/// the connection task that carries it run on the same thread.
pub fn serving_thread() -> usize {
    SERVING_THREAD.with(Cell::get)
}

/// Which of `slots` per-thread slots (one per serving thread, as
/// `server.threads` made them) belongs to the calling thread; 0 when there
/// are none. The one rule for every piece of per-thread state.
pub fn serving_slot(slots: usize) -> usize {
    serving_thread().checked_rem(slots).unwrap_or(0)
}

/// Runs `serve` on a thread of its own with a single-threaded runtime; the
/// receiver resolves when it has finished.
pub fn spawn_thread<F, Fut>(n: usize, serve: F) -> Option<oneshot::Receiver<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (done, finished) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("pollgate-{n}"))
        .spawn(move || {
            SERVING_THREAD.with(|t| t.set(n));
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(serve()),
                Err(e) => error!(error = %e, "cannot start a worker thread's runtime"),
            }
            let _ = done.send(());
        });
    match spawned {
        Ok(_) => Some(finished),
        Err(e) => {
            error!(error = %e, "cannot start a worker thread; its share of connections goes to the others");
            None
        }
    }
}
