//! The accept loop shared by both listeners.
//!
//! Serves HTTP/1.1 and HTTP/2 (h2c prior knowledge) through hyper-util's auto
//! builder, with upgrades. Every connection is watched by one
//! `GracefulShutdown`, so shutdown can stop accepting, let in-flight requests
//! finish, and know when the last connection is gone.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::defaults::{ACCEPT_ERROR_BACKOFF, MAX_HEADERS, MAX_HEADER_BYTES};
use crate::http::Body;

/// Connection settings applied to every accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    /// "public" or "webhook", for logs.
    pub name: &'static str,
    pub header_timeout: Duration,
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
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

/// Accepts on `listener` until `shutdown`, serving each connection with
/// `handler`. Returns once the listener is closed; the connections go on
/// under `graceful`, which the caller drains.
pub async fn run<H, F>(
    listener: TcpListener,
    settings: ConnSettings,
    handler: H,
    shutdown: CancellationToken,
    graceful: &GracefulShutdown,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = builder(settings);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let span = tracing::debug_span!("conn", listener = settings.name, peer = %peer);
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
    // Dropping the listener here closes the socket: new connections are refused.
    drop(listener);
}
