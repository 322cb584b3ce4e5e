//! The accept loop shared by both listeners, and every connection's
//! deadlines and caps.
//!
//! Serves HTTP/1.1 and HTTP/2 (h2c prior knowledge in clear text, ALPN over
//! TLS) through hyper-util's auto builder, with upgrades. Every connection is
//! watched by one `GracefulShutdown`, so shutdown can stop accepting, let
//! in-flight requests finish, and know when the last connection is gone.
//!
//! A clear-text connection on a listener with a [`Lean`] hook starts on the
//! lean HTTP/1.1 path (`lean.rs`) and moves to hyper at its first request
//! the lean path does not serve.
//!
//! # Deadlines and caps (each value from [`ServerConfig`] or `defaults`)
//! - accepting: at most `max_connections` at once per listener; at the cap
//!   the loop stops accepting (logged once) until one ends; a failed accept
//!   (out of descriptors) pauses it instead of spinning;
//! - TLS handshake: `TLS_HANDSHAKE_TIMEOUT`;
//! - the first request: `header_timeout` from the start (covers an HTTP/2
//!   preface or a TLS client that stops half-way);
//! - request heads and idle keep-alive (HTTP/1): `header_timeout`;
//! - HTTP/2: a PING after `header_timeout / 2` of silence, closed when not
//!   answered within `H2_PING_TIMEOUT`; closed after `write_timeout` with
//!   no stream open (idle keep-alive); at most `H2_MAX_STREAMS` streams, and
//!   a client that cancels more than `H2_MAX_RESETS_PER_SEC` a second is cut
//!   off (rapid reset);
//! - writing: a write that makes no progress for `write_timeout` closes the
//!   connection (`io::WriteDeadline`), and so does a send queue that does
//!   not move for as long (an HTTP/2 client that grants no window);
//! - request bodies and upstream bodies have their own idle deadlines where
//!   they are read (`proxy`, `webhook`).

mod body;
mod conn;
mod framing;
#[cfg(test)]
mod hyper_h1;
mod inbound;
mod io;
mod lean;
mod listeners;

pub use body::{BodyFault, BodyWatch, RequestBody};
pub use lean::{Lean, LeanFuture, LeanRequest};
pub use listeners::{BindError, Listeners};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::answer::{self, Body, SendQueue};
use crate::defaults::{
    self, ACCEPT_ERROR_BACKOFF, CONNECTION_QUEUE_BYTES, H2_MAX_PENDING_RESETS, H2_MAX_STREAMS,
    H2_PING_TIMEOUT, H2_STREAM_QUEUE_BYTES, H2_STREAM_SEND_BUFFER, MAX_HEADERS, MAX_HEADER_BYTES,
    TLS_HANDSHAKE_TIMEOUT,
};
use crate::metrics::{ClientError, Metrics};
use conn::ConnState;
use io::WriteDeadline;

/// Connection-level settings of both listeners (restart to change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// A request head must arrive within this; also the idle keep-alive
    /// limit, and the time a connection has to produce its first request.
    pub header_timeout: Duration,
    /// Longest pause between two reads of a request body.
    pub body_timeout: Duration,
    /// Longest a connection may take no answer bytes while some wait for it.
    pub write_timeout: Duration,
    /// Connections the public listener serves at once.
    pub max_connections: usize,
    /// Serving threads (at least one by construction).
    pub threads: std::num::NonZeroUsize,
}

/// One listener's connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    /// "public" or "webhook", for logs and metrics.
    pub name: &'static str,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl ConnSettings {
    pub fn new(name: &'static str, server: &ServerConfig, max_connections: usize) -> Self {
        ConnSettings {
            name,
            header_timeout: server.header_timeout,
            body_timeout: server.body_timeout,
            write_timeout: server.write_timeout,
            max_connections,
        }
    }
}

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The connection is TLS (so the request's scheme is https).
    pub tls: bool,
    /// The connection's send queue; `None` on the lean path, which writes
    /// one answer at a time.
    pub queue: Option<Arc<SendQueue>>,
    /// The connection's place under its listener's cap, for whatever
    /// outlives the connection's serving (a spliced upgrade keeps it);
    /// `None` on the lean path, which never upgrades.
    pub slot: Option<ConnSlot>,
}

/// A connection's place under its listener's cap: freed when the last
/// holder (the connection, an upgrade spliced from it) lets go.
#[derive(Debug, Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// What every connection of one listener shares: its settings, its cap, the
/// metrics it reports to, the shutdown it obeys.
#[derive(Clone)]
pub struct Listening {
    pub settings: ConnSettings,
    /// Permits for `settings.max_connections` connections (shared by the
    /// public listener's sockets, one per serving thread).
    pub permits: Arc<Semaphore>,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

impl Listening {
    pub fn new(settings: ConnSettings, metrics: Metrics, shutdown: CancellationToken) -> Self {
        Listening {
            settings,
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            metrics,
            shutdown,
        }
    }

    /// Connections open now: the cap's permits in use.
    pub fn open(&self) -> usize {
        self.settings
            .max_connections
            .saturating_sub(self.permits.available_permits())
    }
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
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_send_buf_size(H2_STREAM_SEND_BUFFER)
        .keep_alive_interval(defaults::h2_ping_interval(settings.header_timeout))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Accepts on `listener` until shutdown, serving each connection (after a
/// TLS handshake when `tls` is set) with `handler`. Returns once the listener
/// is closed; the connections go on under `graceful`, which the caller drains.
pub async fn run<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    listening: Listening,
    handler: H,
    lean: Option<Lean>,
    graceful: &GracefulShutdown,
) where
    H: Fn(Request<RequestBody>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Listening {
        settings,
        permits,
        metrics,
        shutdown,
    } = listening;
    // One per listener, shared by its connections: a connection's task
    // carries a pointer to it, not copies (a held poll's task stays small).
    let shared = Arc::new(Shared {
        builder: builder(settings),
        settings,
        metrics,
        handler,
        lean,
        shutdown,
    });
    let mut accept_failing = false;
    // At the cap since the last connection that found a slot at once.
    let mut capped = false;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    accept_failing = false;
                    pair
                }
                Err(e) => {
                    // Once per run of failures: EMFILE lasts while it lasts.
                    if !accept_failing {
                        warn!(listener = settings.name, error = %e, "accept failed; pausing between tries");
                    }
                    accept_failing = true;
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                capped = false;
                permit
            }
            Err(_) => {
                // At the cap: this connection waits for a slot, and nothing
                // more is accepted meanwhile. New clients wait in the
                // kernel's backlog, no descriptor is spent on them, and the
                // reserve stays for the webhook, the upstreams and Redis.
                // Counted and logged once per stay at the cap.
                if !capped {
                    shared.metrics.connection_cap_reached(settings.name);
                    warn!(
                        listener = settings.name,
                        max_connections = settings.max_connections,
                        "connection cap reached: not accepting until connections end"
                    );
                }
                capped = true;
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // Never closed: the semaphore lives as long as this loop.
                        Err(_) => break,
                    },
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
        let span = tracing::debug_span!("conn", listener = settings.name, peer = %peer);
        let conn = Conn {
            shared: shared.clone(),
            watcher: graceful.watcher(),
            slot: ConnSlot(Arc::new(permit)),
        };
        match tls.clone() {
            None => {
                let info = ConnInfo {
                    peer,
                    tls: false,
                    queue: None,
                    slot: None,
                };
                if shared.lean.is_none() {
                    tokio::spawn(conn.serve(stream, info).instrument(span));
                    continue;
                }
                tokio::spawn(conn.serve_lean(stream, info).instrument(span));
            }
            Some(acceptor) => {
                let handshake = async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            let info = ConnInfo {
                                peer,
                                tls: true,
                                queue: None,
                                slot: None,
                            };
                            conn.serve(tls_stream, info).await;
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

/// What every connection of one listener shares.
struct Shared<H> {
    builder: auto::Builder<TokioExecutor>,
    settings: ConnSettings,
    metrics: Metrics,
    handler: H,
    lean: Option<Lean>,
    shutdown: CancellationToken,
}

/// An accepted connection: its listener, its place under the listener's
/// cap (freed when it ends), and the graceful shutdown's watch on it.
struct Conn<H> {
    shared: Arc<Shared<H>>,
    watcher: Watcher,
    slot: ConnSlot,
}

impl<H, F> Conn<H>
where
    H: Fn(Request<RequestBody>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// Starts on the lean path; moves to hyper at a request it does not serve.
    async fn serve_lean(self, stream: tokio::net::TcpStream, info: ConnInfo) {
        let Some(lean) = &self.shared.lean else {
            // Spawned, never awaited here: this future would otherwise be as
            // large as hyper's, and it is what a held lean poll's task is.
            tokio::spawn(self.serve(stream, info).in_current_span());
            return;
        };
        let shared = &self.shared;
        match lean::serve(stream, &info, lean, &shared.settings, &shared.shutdown).await {
            lean::Ended::Closed(fault) => {
                if let Some(fault) = fault {
                    shared.metrics.client_error(fault);
                }
            }
            lean::Ended::HandOver(stream, read) => {
                let io = lean::Prefixed::new(read, stream);
                // A task of its own: a lean connection's task stays small.
                tokio::spawn(self.serve(io, info).in_current_span());
            }
        }
    }

    /// Serves `io` with hyper until it closes, or a deadline or cap ends it.
    async fn serve<I>(self, io: I, mut info: ConnInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            shared,
            watcher,
            slot,
        } = self;
        let settings = shared.settings;
        let state = Arc::new(ConnState::new(CONNECTION_QUEUE_BYTES));
        info.queue = Some(state.queue().clone());
        info.slot = Some(slot);
        let requests = state.clone();
        let handler = shared.handler.clone();
        let metrics = shared.metrics.clone();
        let verdicts = Arc::new(inbound::Verdicts::default());
        let io = inbound::Inbound::new(io, verdicts.clone(), metrics.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            // Debug level: free when off, and every log line of the request nests under it.
            let span =
                tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
            let mut request = requests.request();
            // HTTP/2: each stream waits only for its own room (see
            // `answer::queue`); HTTP/1 answers one at a time.
            let mut info = info.clone();
            if req.version() == http::Version::HTTP_2 {
                info.queue = Some(requests.stream_queue(H2_STREAM_QUEUE_BYTES));
            }
            // HTTP/1: the framing follower's verdict on this request.
            let http1 = req.version() != http::Version::HTTP_2;
            let verdict = if http1 {
                verdicts.next()
            } else {
                inbound::Verdict::Serve
            };
            let fut = if verdict != inbound::Verdict::Serve {
                metrics.client_error(ClientError::bad_framing);
                Either::Left(std::future::ready(framing::refusal(verdict)))
            } else {
                let (parts, body) = req.into_parts();
                let (body, watch) = RequestBody::new(body, settings.body_timeout);
                let mut req = Request::from_parts(parts, body);
                if let Some(watch) = watch {
                    req.extensions_mut().insert(watch);
                }
                Either::Right(handler(req, info))
            }
            .instrument(span);
            let verdicts = verdicts.clone();
            async move {
                let mut resp = fut.await;
                // The follower stopped after this request: hyper must not
                // read a request no verdict was given for (an upgrade's
                // 101 hands the connection over anyway).
                if http1
                    && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
                    && verdicts.last_judged()
                {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                request.responded();
                // In flight until the answer's body is done with.
                Ok::<_, Infallible>(resp.map(|body| {
                    answer::stream(conn::InFlight {
                        body,
                        _request: request,
                    })
                }))
            }
        });
        let io = WriteDeadline::new(io, settings.write_timeout, state.queue().clone());
        let conn = shared
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        // Watched: shutdown asks it to finish gracefully (HTTP/1: after the
        // request in flight; HTTP/2: GOAWAY).
        let conn = watcher.watch(conn.into_owned());
        // The connection's deadlines are watched by a task of their own:
        // polled only when one of them moves, not at every wakeup of the
        // connection (a select here polled four watches per I/O event).
        let (cut, mut cut_off) = tokio::sync::oneshot::channel();
        tokio::spawn(conn::watchdog(
            state.clone(),
            settings,
            shared.metrics.clone(),
            cut,
        ));
        let ended = tokio::select! {
            biased;
            served = conn => match served {
                Ok(()) => None,
                Err(e) if io::is_write_timeout(&*e) => Some(ClientError::write_timeout),
                Err(e) => {
                    debug!(error = %e, "connection ended with an error");
                    None
                }
            },
            fault = &mut cut_off => fault.unwrap_or(None),
        };
        state.queue().close();
        if let Some(fault) = ended {
            debug!(?fault, "connection closed");
            shared.metrics.client_error(fault);
        }
    }
}
