//! The public port's sockets and the threads that serve them: one
//! single-threaded runtime per thread, each accepting on its own socket.

use std::cell::Cell;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tracing::error;

use crate::config::Config;
use crate::defaults;

/// The bound sockets. Bound by the caller, so tests use port 0 and `main`
/// reports a bind error before anything starts.
pub struct Listeners {
    /// The public address: one socket per thread (`server.threads`), all on
    /// one port with SO_REUSEPORT, so the kernel spreads connections over
    /// threads that never hand work to each other.
    pub public: Vec<TcpListener>,
    pub webhook: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config`.
    ///
    /// # Errors
    /// The address and the OS error of the first bind that fails.
    pub async fn bind(config: &Config) -> Result<Listeners, BindError> {
        let webhook = config.webhook.listen;
        Ok(Listeners {
            public: bind_shared(config.listen, config.server.threads).map_err(|source| {
                BindError {
                    addr: config.listen,
                    source,
                }
            })?,
            webhook: TcpListener::bind(webhook)
                .await
                .map_err(|source| BindError {
                    addr: webhook,
                    source,
                })?,
        })
    }
}

/// `n` listening sockets on `addr` (port 0: one port the kernel picks).
/// A single socket does without SO_REUSEPORT, so that a second pollgate on
/// the same port fails to start instead of sharing its traffic.
fn bind_shared(addr: SocketAddr, n: NonZeroUsize) -> std::io::Result<Vec<TcpListener>> {
    let n = n.get();
    let mut sockets = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let socket = if at.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if n > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(at)?;
        let listener = socket.listen(defaults::LISTEN_BACKLOG)?;
        at = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

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
