//! The accept loop shared by both listeners.
//!
//! Serves HTTP/1.1 and HTTP/2 (h2c prior knowledge in clear text, ALPN over
//! TLS) through hyper-util's auto builder, with upgrades. Every connection is
//! watched by one `GracefulShutdown`, so shutdown can stop accepting, let
//! in-flight requests finish, and know when the last connection is gone.
//!
//! A clear-text connection on a listener with a [`Lean`] hook starts on the
//! lean HTTP/1.1 path (`lean.rs`) and moves to hyper at its first request
//! the lean path does not serve.

mod lean;
mod listeners;

pub use lean::{Lean, LeanFuture, LeanRequest};
pub use listeners::{serving_slot, serving_thread, spawn_thread, BindError, Listeners};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::defaults::{ACCEPT_ERROR_BACKOFF, MAX_HEADERS, MAX_HEADER_BYTES, TLS_HANDSHAKE_TIMEOUT};
use crate::http::Body;

/// Connection settings applied to every accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    /// "public" or "webhook", for logs.
    pub name: &'static str,
    pub header_timeout: Duration,
}

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The connection is TLS (so the request's scheme is https).
    pub tls: bool,
}

fn builder(settings: ConnSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
    builder
}

/// Accepts on `listener` until `shutdown`, serving each connection (after a
/// TLS handshake when `tls` is set) with `handler`. Returns once the listener
/// is closed; the connections go on under `graceful`, which the caller drains.
pub async fn run<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: ConnSettings,
    handler: H,
    lean: Option<Lean>,
    shutdown: CancellationToken,
    graceful: &GracefulShutdown,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // Shared: every connection's task would otherwise carry a copy (~600 bytes).
    let builder = std::sync::Arc::new(builder(settings));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(listener = settings.name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
        let span = tracing::debug_span!("conn", listener = settings.name, peer = %peer);
        let (builder, handler, watcher) = (builder.clone(), handler.clone(), graceful.watcher());
        match tls.clone() {
            None => {
                let info = ConnInfo { peer, tls: false };
                let Some(lean) = lean.clone() else {
                    tokio::spawn(serve(stream, info, builder, handler, watcher).instrument(span));
                    continue;
                };
                let shutdown = shutdown.clone();
                let conn = async move {
                    let header_timeout = settings.header_timeout;
                    match lean::serve(stream, info, &lean, header_timeout, &shutdown).await {
                        lean::Ended::Closed => drop(watcher),
                        lean::Ended::HandOver(stream, read) => {
                            let io = lean::Prefixed::new(read, stream);
                            // A task of its own: a lean connection's task stays small.
                            let hyper = serve(io, info, builder, handler, watcher);
                            tokio::spawn(hyper.in_current_span());
                        }
                    }
                };
                tokio::spawn(conn.instrument(span));
            }
            Some(acceptor) => {
                let handshake = async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            let info = ConnInfo { peer, tls: true };
                            serve(tls_stream, info, builder, handler, watcher).await;
                        }
                        // A failed handshake costs nothing more than this line.
                        Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                        Err(_) => debug!("TLS handshake timed out"),
                    }
                };
                tokio::spawn(handshake.instrument(span));
            }
        }
    }
    // Dropping the listener here closes the socket: new connections are refused.
    drop(listener);
}

async fn serve<I, H, F>(
    io: I,
    info: ConnInfo,
    builder: std::sync::Arc<auto::Builder<TokioExecutor>>,
    handler: H,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        // Debug level: free when off, and every log line of the request nests under it.
        let span =
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
        let fut = handler(req, info).instrument(span);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        debug!(error = %e, "connection ended with an error");
    }
}
