//! The public port's sockets: one per serving thread (see `threads`), all
//! on one port.

use std::net::SocketAddr;
use std::num::NonZeroUsize;

use tokio::net::{TcpListener, TcpSocket};

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
