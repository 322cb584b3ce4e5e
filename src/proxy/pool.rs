//! One serving thread's connections to one upstream, on hyper's own HTTP/1
//! client connections (`hyper::client::conn::http1`).
//!
//! Why not hyper-util's pooled `Client`: a profile of plain proxied GETs put
//! a fifth of pollgate's user-space time in it (a pool keyed by scheme and
//! authority behind a shared lock, a checkout racing a connect, a task per
//! request to return the connection). Here a pool is one upstream's, on one
//! thread, so it is a short list behind an uncontended lock, and a
//! connection goes back to it as soon as its answer's head is out: it is
//! taken again once hyper says it is ready (its last answer's body is done).
//!
//! An app may close a kept-alive connection at any time (after every
//! answer, even, without saying `Connection: close`). So, as nginx does:
//! - a pooled connection is looked at before a request goes out on it
//!   (`socket::Probe`: has the app's FIN or a reset arrived?), and one the
//!   app closed is dropped, not used;
//! - a request hyper could not even start on a pooled connection (it found
//!   it closed) comes back (`try_send_request`) and goes out on another;
//! - a request hyper had written when the connection closed with no answer
//!   is sent once more, on a new connection, only when sending it twice
//!   changes nothing at the app (a bodiless GET, HEAD or OPTIONS: nginx's
//!   `proxy_next_upstream error`); any other request's failure is the
//!   answer (it may have reached the app). Each goes in
//!   `pollgate_upstream_retries_total`.
//!
//! Also kept from hyper-util's client: connections idle longer than the
//! idle timeout are closed (`evict`, from the sweep), and at most
//! `max_idle` idle ones are kept; connecting is hyper-util's
//! `HttpConnector` (every address of a name, the connect timeout split over
//! them, IPv6 and IPv4 raced).
//!
//! Busy connections stay in the list, not ready until their answer is done:
//! they are as many as the requests in flight, which `max_in_flight` bounds.

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::either::Either;

use super::socket::{Idle, Probe, Socket};
use crate::answer::Body;
use crate::defaults::{
    UPSTREAM_CLOSE_MEMORY, UPSTREAM_CLOSE_SETTLE, UPSTREAM_POOL_IDLE, UPSTREAM_STALE_RETRIES,
};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection: the upstream refused, did not answer within the
    /// connect timeout, or its TLS handshake failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The connection failed with the request on it.
    #[error(transparent)]
    Failed(#[from] hyper::Error),
}

/// How to open a connection to the upstream.
pub(super) struct Connector {
    authority: Authority,
    /// The upstream as a URI, for `tcp`.
    dst: http::Uri,
    tcp: HttpConnector,
    connect_timeout: Duration,
    /// For an https upstream.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Connector {
    pub(super) fn new(
        scheme: Scheme,
        authority: Authority,
        connect_timeout: Duration,
        tls: Option<tokio_rustls::TlsConnector>,
    ) -> Connector {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_nodelay(true);
        // It dials TCP for https too: TLS is done here, over what it gives.
        tcp.enforce_http(false);
        let mut dst = http::uri::Parts::default();
        dst.scheme = Some(scheme);
        dst.authority = Some(authority.clone());
        dst.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        let dst = http::Uri::from_parts(dst).unwrap_or_default();
        Connector {
            authority,
            dst,
            tcp,
            connect_timeout,
            tls,
        }
    }
}

struct Conn {
    sender: http1::SendRequest<Body>,
    /// The socket under it, to look at before reuse.
    probe: Probe,
    /// When its last answer's head came back.
    returned: Instant,
    /// Since when it has been seen idle, by a request looking for one or
    /// by the sweep (`None`: busy when last looked at).
    idle_since: Option<Instant>,
}

/// A request sent once more, or on another connection than first chosen:
/// the `reason` label of `pollgate_upstream_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A pooled connection the app had closed was found before use and
    /// dropped; the request went out on another.
    Stale,
    /// hyper found the pooled connection closed before writing the
    /// request; it went out on another.
    Unsent,
    /// The connection closed under a written request with no answer; the
    /// request (safe to repeat) went out once more on a new connection.
    Replayed,
}

impl Retry {
    pub fn label(self) -> &'static str {
        match self {
            Retry::Stale => "stale",
            Retry::Unsent => "unsent",
            Retry::Replayed => "replayed",
        }
    }
}

pub(super) struct Pool {
    connector: Connector,
    conns: Mutex<Conns>,
    max_idle: usize,
    idle_timeout: Duration,
}

#[derive(Default)]
struct Conns {
    list: Vec<Conn>,
    /// When the app last answered a request on a connection it had
    /// answered on before: it keeps connections open.
    kept: Option<Instant>,
    /// When the app last closed a connection soon after answering on it
    /// (within `UPSTREAM_CLOSE_SETTLE`): it may do so after every answer.
    closes_early: Option<Instant>,
    /// The shortest time after its last answer at which the app was found
    /// to have closed an idle connection: its keep-alive timeout, learned
    /// (from above), and when that was last seen. A request that cannot be
    /// sent twice is not put on a connection that has been idle for most
    /// of it. Forgotten after `UPSTREAM_POOL_IDLE` without another sight.
    idle_close: Option<(Duration, Instant)>,
}

impl Conns {
    /// Whether a request must not go out on a pooled connection that may be
    /// closing under it, unless that one has sat idle for
    /// `UPSTREAM_CLOSE_SETTLE`. One that cannot be sent twice
    /// (`replayable` false): unless the app is known to keep its
    /// connections and has not lately closed one right after an answer.
    /// One that can: while the app has lately closed connections right
    /// after answering (a new connection then costs less than a request
    /// written for nothing, and a replay).
    fn wary(&self, replayable: bool, now: Instant) -> bool {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.duration_since(t) < UPSTREAM_CLOSE_MEMORY);
        let early = recent(self.closes_early);
        early || (!replayable && !recent(self.kept))
    }

    /// The app closed a connection whose last answer came back at
    /// `returned` (the kernel said so, or a request failed on it): soon
    /// after it (it may close after every answer), or once idle (its
    /// keep-alive timeout is at most that long).
    fn app_closed(&mut self, returned: Instant, now: Instant) {
        let after = now.saturating_duration_since(returned);
        if after < UPSTREAM_CLOSE_SETTLE {
            self.closes_early = Some(now);
            return;
        }
        let known = self
            .idle_close
            .filter(|(_, at)| now.duration_since(*at) < UPSTREAM_POOL_IDLE);
        self.idle_close = Some((known.map_or(after, |(d, _)| d.min(after)), now));
    }

    /// How long a connection may have been idle to take a request that
    /// cannot be sent twice: three quarters of the app's learned keep-alive.
    fn idle_limit(&self, replayable: bool, now: Instant) -> Option<Duration> {
        let (d, at) = self.idle_close.filter(|_| !replayable)?;
        (now.duration_since(at) < UPSTREAM_POOL_IDLE).then_some(d * 3 / 4)
    }
}

/// A connection taken out of the pool, or just opened.
struct Taken {
    sender: http1::SendRequest<Body>,
    probe: Probe,
    /// When it came back from its last answer (`None`: new).
    returned: Option<Instant>,
}

impl Pool {
    pub(super) fn new(connector: Connector, max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            connector,
            conns: Mutex::default(),
            max_idle: max_idle.max(1),
            idle_timeout,
        }
    }

    /// Sends `req` (origin-form target, `Host` set) and waits for the
    /// answer's head; `retried` hears of every retry. Cancel-safe: dropping
    /// the future closes the connection the request was on, as hyper does.
    pub(super) async fn request(
        &self,
        mut req: Request<Body>,
        mut retried: impl FnMut(Retry),
    ) -> Result<Response<Incoming>, PoolError> {
        // hyper writes the target as given (callers give origin-form), and
        // an HTTP/1.1 request needs a Host: the upstream's when the client
        // sent none (host and port, never credentials).
        if !req.headers().contains_key(http::header::HOST) {
            let a = &self.connector.authority;
            let host = match a.port() {
                Some(port) => http::HeaderValue::from_str(&format!("{}:{port}", a.host())),
                None => http::HeaderValue::from_str(a.host()),
            };
            if let Ok(host) = host {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
        for _ in 0..UPSTREAM_STALE_RETRIES {
            let copy = replayable(&req);
            let Some(mut taken) = self.ready(copy.is_some(), &mut retried) else {
                break;
            };
            match taken.sender.try_send_request(req).await {
                Ok(resp) => {
                    self.put(taken, &resp);
                    return Ok(resp);
                }
                Err(mut e) => {
                    let unsent = e.take_message();
                    let closed = unsent.is_some() || closed_under(e.error());
                    if let (true, Some(returned)) = (closed, taken.returned) {
                        self.conns.lock().app_closed(returned, Instant::now());
                    }
                    match (unsent, copy) {
                        // Never started: the connection was closed under us.
                        (Some(again), _) => {
                            retried(Retry::Unsent);
                            req = again;
                        }
                        // The app closed the connection as the request went
                        // out. A pooled connection beside it is likely as
                        // old: the one replay goes out on a new one.
                        (None, Some(copy)) if closed => {
                            retried(Retry::Replayed);
                            return self.send_new(copy).await;
                        }
                        (None, _) => return Err(PoolError::Failed(e.into_error())),
                    }
                }
            }
        }
        self.send_new(req).await
    }

    /// Sends `req` on a connection opened for it.
    async fn send_new(&self, req: Request<Body>) -> Result<Response<Incoming>, PoolError> {
        let mut taken = self.connect().await?;
        let resp = taken.sender.send_request(req).await?;
        self.put(taken, &resp);
        Ok(resp)
    }

    /// An open connection that can take a request now, taken out of the
    /// pool: the most recently used first, so the least used ones age out.
    /// Those the app has closed are dropped on the way (`retried` hears).
    ///
    /// A request is not put on a connection that may be closing under it
    /// when `Conns::wary` says so: then only on one that has been idle for
    /// `UPSTREAM_CLOSE_SETTLE` (a close that follows an answer has arrived
    /// by then, and the probe sees it). `None`: it goes out on a new
    /// connection.
    fn ready(&self, replayable: bool, retried: &mut impl FnMut(Retry)) -> Option<Taken> {
        let now = Instant::now();
        let mut conns = self.conns.lock();
        // Closed ones go now, not at the sweep: an app that closes after
        // every answer would otherwise grow the list by the request rate.
        // (Nothing is learned from them: hyper also closes connections
        // for pollgate's own reasons, a body dropped half-read.)
        conns.list.retain_mut(|c| {
            if c.sender.is_closed() {
                return false;
            }
            c.idle_since = match (c.sender.is_ready(), c.idle_since) {
                (false, _) => None,
                (true, since) => Some(since.unwrap_or(now)),
            };
            true
        });
        // Looked at once: a close found below makes the next request wary.
        let wary = conns.wary(replayable, now);
        let idle_limit = conns.idle_limit(replayable, now);
        let usable = |c: &Conn| {
            c.idle_since
                .is_some_and(|t| !wary || now.duration_since(t) >= UPSTREAM_CLOSE_SETTLE)
                && idle_limit.is_none_or(|limit| now.duration_since(c.returned) < limit)
        };
        loop {
            let at = conns.list.iter().rposition(usable)?;
            let conn = conns.list.remove(at);
            // Plain HTTP: unasked bytes would be read as this request's
            // answer. Over TLS they may be the TLS layer's own (a session
            // ticket), which hyper's connection reads as it goes.
            match conn.probe.idle() {
                Idle::Open => {}
                Idle::Unasked if self.connector.tls.is_some() => {}
                Idle::Closed | Idle::Unasked => {
                    conns.app_closed(conn.returned, now);
                    retried(Retry::Stale);
                    continue;
                }
            }
            return Some(Taken {
                sender: conn.sender,
                probe: conn.probe,
                returned: Some(conn.returned),
            });
        }
    }

    /// Back in the pool, busy until its answer's body is done. An upgraded
    /// connection is the tunnel's now, and hyper has let it go.
    fn put(&self, taken: Taken, resp: &Response<Incoming>) {
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        let mut conns = self.conns.lock();
        if taken.returned.is_some() {
            conns.kept = Some(Instant::now());
        }
        conns.list.push(Conn {
            sender: taken.sender,
            probe: taken.probe,
            returned: Instant::now(),
            idle_since: None,
        });
    }

    /// The sweep: drops closed connections, closes those idle longer than
    /// the idle timeout, and the least recently used idle ones past
    /// `max_idle`.
    pub(super) fn evict(&self, now: Instant) {
        let list = &mut self.conns.lock().list;
        list.retain(|c| !c.sender.is_closed());
        for c in list.iter_mut() {
            c.idle_since = match (c.sender.is_ready(), c.idle_since) {
                (false, _) => None,
                (true, since) => Some(since.unwrap_or(now)),
            };
        }
        let idle = self.idle_timeout;
        list.retain(|c| c.idle_since.is_none_or(|t| now.duration_since(t) <= idle));
        let mut surplus = list
            .iter()
            .filter(|c| c.idle_since.is_some())
            .count()
            .saturating_sub(self.max_idle);
        // The front of the list was used least recently.
        list.retain(|c| {
            let drop = surplus > 0 && c.idle_since.is_some();
            surplus -= usize::from(drop);
            !drop
        });
    }

    /// Connections in the pool, idle or busy (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.conns.lock().list.len()
    }

    async fn connect(&self) -> Result<Taken, PoolError> {
        let c = &self.connector;
        // The whole of it: name, TCP and TLS.
        let (io, probe) = tokio::time::timeout(c.connect_timeout, open(c))
            .await
            .map_err(|_| {
                PoolError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(PoolError::Connect)?;
        // A connection that never got going is a connect failure.
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| PoolError::Connect(std::io::Error::other(e)))?;
        // The connection runs as a task on this thread's runtime, like the
        // requests that use it. Upgrades: a 101 hands its socket to `splice`.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Taken {
            sender,
            probe,
            returned: None,
        })
    }
}

/// Whether a request's connection failed as an app's close does, before
/// any answer: its end (the message cut short), or a reset or broken pipe
/// (the app closed with the request unread). A malformed answer, or
/// pollgate's own error, is not: that is the answer.
fn closed_under(e: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    if e.is_incomplete_message() {
        return true;
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| {
        matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
        )
    })
}

/// A copy of `req` to send again if its connection fails under it: only a
/// request without a body whose method is idempotent and safe (GET, HEAD,
/// OPTIONS), so sending it twice changes nothing at the app. The copy has
/// the head; extensions are the proxy's own and not needed upstream.
fn replayable(req: &Request<Body>) -> Option<Request<Body>> {
    use http::Method;
    use http_body::Body as _;
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(crate::answer::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// A connection to an upstream: plain TCP, or TLS over it.
type Stream = Either<Socket, Box<tokio_rustls::client::TlsStream<Socket>>>;

/// Opens a TCP (and for https, TLS) connection to the upstream.
async fn open(c: &Connector) -> std::io::Result<(TokioIo<Stream>, Probe)> {
    use tower_service::Service;
    let mut tcp = c.tcp.clone();
    let tcp = tcp
        .call(c.dst.clone())
        .await
        .map_err(std::io::Error::other)?;
    let (socket, probe) = Socket::new(tcp.into_inner());
    let Some(tls) = &c.tls else {
        return Ok((TokioIo::new(Either::Left(socket)), probe));
    };
    // An IPv6 literal comes bracketed in an authority.
    let host = c.authority.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(bare.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tls.connect(name, socket).await?;
    Ok((TokioIo::new(Either::Right(Box::new(stream))), probe))
}

/// The TLS side of a connector, from the upstream's verification config.
pub(super) fn tls_connector(mut config: rustls::ClientConfig) -> tokio_rustls::TlsConnector {
    // pollgate speaks HTTP/1.1 to upstreams.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// How the test upstream answers each request.
    #[derive(Clone, Copy)]
    enum Mode {
        /// `ok`, and the connection stays open.
        KeepAlive,
        /// Reads the request, then closes without a word.
        Silent,
        /// Announces 10 bytes, sends 2, and waits.
        Stalled,
        /// Answers the first N requests on each connection; reads the next
        /// and closes without a word (an app's keep-alive timeout that
        /// fires as a request arrives).
        AnswersPerConnection(usize),
        /// Answers the very first request it gets; reads every later one
        /// (on any connection) and closes without a word.
        FirstOnly,
    }

    /// A raw HTTP/1.1 upstream on a thread (and runtime) of its own, so it
    /// goes on while a test blocks its own runtime. It counts connections
    /// and request heads, and says when a connection ended.
    struct Upstream {
        authority: Authority,
        accepted: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
        ended: tokio::sync::mpsc::UnboundedReceiver<()>,
        /// Closes every open connection now; answered once they are shut.
        close_all: std::sync::mpsc::Sender<std::sync::mpsc::Sender<()>>,
    }

    fn upstream(mode: Mode) -> Upstream {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (accepted, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (ended_tx, ended) = tokio::sync::mpsc::unbounded_channel();
        let (close_all, close_rx) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<()>>();
        let (acc, req) = (accepted.clone(), requests.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                // Per open connection: a stop, and word back once its
                // socket is closed.
                type Stop = (
                    tokio::sync::oneshot::Sender<()>,
                    tokio::sync::oneshot::Receiver<()>,
                );
                let open: Arc<Mutex<Vec<Stop>>> = Arc::default();
                let closer = open.clone();
                // Close requests come from a blocked test thread: a thread
                // of its own turns them into oneshots.
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                std::thread::spawn(move || {
                    while let Ok(ack) = close_rx.recv() {
                        let _ = tx.send(ack);
                    }
                });
                tokio::spawn(async move {
                    while let Some(ack) = rx.recv().await {
                        let stops: Vec<Stop> = closer.lock().drain(..).collect();
                        for (stop, closed) in stops {
                            if stop.send(()).is_ok() {
                                let _ = closed.await;
                            }
                        }
                        let _ = ack.send(());
                    }
                });
                let answered = Arc::new(AtomicUsize::new(0));
                while let Ok((mut sock, _)) = listener.accept().await {
                    let answered = answered.clone();
                    acc.fetch_add(1, Ordering::SeqCst);
                    let (stop_tx, mut stop) = tokio::sync::oneshot::channel();
                    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
                    open.lock().push((stop_tx, closed_rx));
                    let (req, ended) = (req.clone(), ended_tx.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        let mut seen = Vec::new();
                        let mut on_this = 0;
                        loop {
                            let n = tokio::select! {
                                n = sock.read(&mut buf) => n.unwrap_or(0),
                                _ = &mut stop => {
                                    // Closed (the FIN is in the client's
                                    // kernel on return), then said so.
                                    drop(sock);
                                    let _ = closed_tx.send(());
                                    let _ = ended.send(());
                                    return;
                                }
                            };
                            if n == 0 {
                                break;
                            }
                            seen.extend_from_slice(&buf[..n]);
                            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                                seen.drain(..end + 4);
                                req.fetch_add(1, Ordering::SeqCst);
                                on_this += 1;
                                let silent = match mode {
                                    Mode::Silent => true,
                                    Mode::AnswersPerConnection(n) => on_this > n,
                                    Mode::FirstOnly => answered.fetch_add(1, Ordering::SeqCst) > 0,
                                    Mode::KeepAlive | Mode::Stalled => false,
                                };
                                let answer: &[u8] = match mode {
                                    Mode::Stalled => {
                                        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok"
                                    }
                                    _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                                };
                                if silent || sock.write_all(answer).await.is_err() {
                                    let _ = ended.send(());
                                    return;
                                }
                            }
                        }
                        let _ = ended.send(());
                    });
                }
            });
        });
        Upstream {
            authority: Authority::try_from(addr.to_string()).unwrap(),
            accepted,
            requests,
            ended,
            close_all,
        }
    }

    impl Upstream {
        fn pool(&self, max_idle: usize) -> Pool {
            let connector = Connector::new(
                Scheme::HTTP,
                self.authority.clone(),
                Duration::from_secs(2),
                None,
            );
            Pool::new(connector, max_idle, Duration::from_secs(60))
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }

        /// Closes its side of every open connection and returns once done,
        /// blocking this thread: the test's runtime runs nothing meanwhile,
        /// so hyper has not seen the close when the next request goes out.
        fn close_all_blocking(&self) {
            let (ack, done) = std::sync::mpsc::channel();
            self.close_all.send(ack).unwrap();
            done.recv().unwrap();
        }
    }

    fn get() -> Request<Body> {
        Request::get("/x").body(crate::answer::empty()).unwrap()
    }

    fn post() -> Request<Body> {
        Request::post("/orders")
            .body(crate::answer::full("{}"))
            .unwrap()
    }

    async fn body_of(resp: Response<Incoming>) -> String {
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Sends `req` through `pool`, returning the outcome and the retries.
    async fn through(pool: &Pool, req: Request<Body>) -> (Result<String, String>, Vec<Retry>) {
        let mut retries = Vec::new();
        let answered = pool.request(req, |r| retries.push(r)).await;
        let outcome = match answered {
            Ok(resp) => Ok(body_of(resp).await),
            Err(e) => Err(e.to_string()),
        };
        (outcome, retries)
    }

    fn ok() -> Result<String, String> {
        Ok("ok".into())
    }

    /// Waits until a pooled connection can take a request (hyper says so
    /// once its connection task has seen the last answer's end).
    async fn reusable(pool: &Pool) {
        std::future::poll_fn(|cx| {
            let mut conns = pool.conns.lock();
            let ready = conns
                .list
                .iter_mut()
                .any(|c| c.sender.poll_ready(cx).is_ready());
            if ready {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    #[tokio::test]
    async fn a_connection_is_used_again_once_its_answer_is_read() {
        let up = upstream(Mode::KeepAlive);
        let pool = up.pool(4);
        for _ in 0..10 {
            assert_eq!(through(&pool, get()).await, (ok(), vec![]));
            reusable(&pool).await;
        }
        assert_eq!((up.accepted(), pool.len()), (1, 1));
    }

    /// A pool whose one connection the app has closed, which hyper has not
    /// noticed yet: it still looks ready.
    async fn with_a_stale_connection() -> (Upstream, Pool) {
        let up = upstream(Mode::KeepAlive);
        let pool = up.pool(4);
        assert_eq!(through(&pool, get()).await, (ok(), vec![]));
        reusable(&pool).await;
        up.close_all_blocking();
        assert!(pool.conns.lock().list[0].sender.is_ready());
        (up, pool)
    }

    #[tokio::test]
    async fn a_pooled_connection_the_app_closed_is_seen_before_use_and_not_used() {
        let (up, pool) = with_a_stale_connection().await;
        // The app's FIN is in the kernel: the GET goes out on a new
        // connection, and reaches the app once.
        assert_eq!(through(&pool, get()).await, (ok(), vec![Retry::Stale]));
        assert_eq!(up.accepted(), 2);
        assert_eq!(up.requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_post_reuses_a_connection_at_once_only_when_the_app_keeps_them() {
        let up = upstream(Mode::KeepAlive);
        let pool = up.pool(4);
        assert_eq!(through(&pool, get()).await, (ok(), vec![]));
        reusable(&pool).await;
        // Nothing says yet that the app keeps connections: a POST does not
        // go on one that may be closing (it could not be sent again).
        assert_eq!(through(&pool, post()).await, (ok(), vec![]));
        assert_eq!(up.accepted(), 2);
        reusable(&pool).await;
        // A GET answered on a reused connection says so.
        assert_eq!(through(&pool, get()).await, (ok(), vec![]));
        reusable(&pool).await;
        assert_eq!(through(&pool, post()).await, (ok(), vec![]));
        assert_eq!(up.accepted(), 2, "the POST was sent on a kept connection");
    }

    #[tokio::test]
    async fn a_get_the_app_dropped_goes_once_more_on_a_new_connection() {
        let up = upstream(Mode::AnswersPerConnection(1));
        let pool = up.pool(4);
        assert_eq!(through(&pool, get()).await, (ok(), vec![]));
        reusable(&pool).await;
        // The app reads the second GET on the kept connection and closes.
        assert_eq!(through(&pool, get()).await, (ok(), vec![Retry::Replayed]));
        assert_eq!((up.accepted(), up.requests.load(Ordering::SeqCst)), (2, 3));
    }

    #[tokio::test]
    async fn a_post_the_app_dropped_is_never_sent_again() {
        let up = upstream(Mode::AnswersPerConnection(2));
        let pool = up.pool(4);
        for _ in 0..2 {
            assert_eq!(through(&pool, get()).await, (ok(), vec![]));
            reusable(&pool).await;
        }
        // Kept connections: the POST goes on one, and the app drops it.
        let (outcome, retries) = through(&pool, post()).await;
        assert!(outcome.is_err(), "{outcome:?}");
        assert_eq!(retries, vec![]);
        assert_eq!(up.accepted(), 1, "no second connection for it");
        // A close so soon after an answer: the next POST is wary again.
        assert_eq!(through(&pool, post()).await, (ok(), vec![]));
        assert_eq!(up.accepted(), 2);
    }

    #[tokio::test]
    async fn a_replay_is_made_once_and_its_failure_is_the_answer() {
        let up = upstream(Mode::FirstOnly);
        let pool = up.pool(4);
        assert_eq!(through(&pool, get()).await, (ok(), vec![]));
        reusable(&pool).await;
        let (outcome, retries) = through(&pool, get()).await;
        assert!(outcome.is_err(), "{outcome:?}");
        assert_eq!(retries, vec![Retry::Replayed], "one replay, no more");
        assert_eq!((up.accepted(), up.requests.load(Ordering::SeqCst)), (2, 3));
    }

    #[tokio::test]
    async fn a_request_the_app_took_on_a_new_connection_is_never_sent_again() {
        let up = upstream(Mode::Silent);
        let pool = up.pool(4);
        for req in [get, post] {
            let (outcome, retries) = through(&pool, req()).await;
            assert!(outcome.is_err(), "{outcome:?}");
            assert_eq!(retries, vec![]);
        }
        assert_eq!((up.accepted(), up.requests.load(Ordering::SeqCst)), (2, 2));
    }

    #[test]
    fn what_the_pool_learns_from_the_apps_closes() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        let mut c = Conns::default();
        // Nothing known: a GET reuses; a POST waits for proof of keep-alive.
        assert!(!c.wary(true, t0) && c.wary(false, t0));
        c.kept = Some(t0);
        assert!(!c.wary(false, t0));
        // Closed 1 s after its answer: an idle close, its timeout learned.
        c.app_closed(t0, later(1_000));
        assert!(!c.wary(false, later(1_000)));
        let at = later(1_000);
        assert_eq!(c.idle_limit(false, at), Some(Duration::from_millis(750)));
        assert_eq!(c.idle_limit(true, at), None, "a GET can be replayed");
        c.app_closed(later(1_000), later(1_600));
        let at = later(1_600);
        let limit = c.idle_limit(false, at);
        assert_eq!(limit, Some(Duration::from_millis(450)), "the shortest");
        assert_eq!(
            c.idle_limit(false, at + UPSTREAM_POOL_IDLE),
            None,
            "forgotten"
        );
        // Closed right after an answer: wary of every reuse, for a while.
        c.app_closed(later(2_000), later(2_010));
        assert!(c.wary(true, later(2_010)) && c.wary(false, later(2_010)));
        let forgotten = later(2_010) + UPSTREAM_CLOSE_MEMORY;
        c.kept = Some(forgotten);
        assert!(!c.wary(true, forgotten) && !c.wary(false, forgotten));
    }

    #[tokio::test]
    async fn a_busy_connection_is_not_taken() {
        let up = upstream(Mode::Stalled);
        let pool = up.pool(4);
        // Its body is not done: the connection stays busy.
        let _first = pool.request(get(), |_| {}).await.unwrap();
        let _second = pool.request(get(), |_| {}).await.unwrap();
        assert_eq!((up.accepted(), pool.len()), (2, 2));
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout_and_past_max_idle() {
        let mut up = upstream(Mode::KeepAlive);
        let pool = up.pool(2);
        // Four at once: four connections.
        let answers =
            futures_util::future::join_all((0..4).map(|_| pool.request(get(), |_| {}))).await;
        for a in answers {
            assert_eq!(body_of(a.unwrap()).await, "ok");
        }
        assert_eq!((up.accepted(), pool.len()), (4, 4));
        let now = Instant::now();
        pool.evict(now);
        assert_eq!(pool.len(), 2, "two idle ones kept");
        for _ in 0..2 {
            up.ended.recv().await.unwrap();
        }
        pool.evict(now + Duration::from_secs(30));
        assert_eq!(pool.len(), 2, "not idle long enough");
        pool.evict(now + Duration::from_secs(61));
        assert_eq!(pool.len(), 0);
        for _ in 0..2 {
            up.ended.recv().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_101_connection_is_not_pooled_and_the_host_never_carries_credentials() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap();
            let _ = head_tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = sock
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n")
                .await;
            let _ = sock.read(&mut buf).await;
        });
        let authority = Authority::try_from(format!("user:secret@{addr}")).unwrap();
        let pool = Pool::new(
            Connector::new(Scheme::HTTP, authority, Duration::from_secs(2), None),
            4,
            Duration::from_secs(60),
        );
        let mut req = get();
        req.headers_mut()
            .insert(http::header::UPGRADE, http::HeaderValue::from_static("x"));
        req.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        let resp = pool.request(req, |_| {}).await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(pool.len(), 0);
        let head = head_rx.await.unwrap().to_ascii_lowercase();
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
        assert!(!head.contains("secret"), "{head}");
    }

    #[tokio::test]
    async fn an_upstream_that_refuses_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let authority = Authority::try_from(format!("127.0.0.1:{port}")).unwrap();
        let pool = Pool::new(
            Connector::new(Scheme::HTTP, authority, Duration::from_secs(2), None),
            4,
            Duration::from_secs(60),
        );
        assert!(matches!(
            pool.request(get(), |_| {}).await,
            Err(PoolError::Connect(_))
        ));
    }
}
