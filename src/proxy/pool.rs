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
//! What hyper-util's client did for correctness, kept:
//! - an idle connection the upstream closed is never used: a request that
//!   hyper could not even start on it comes back (`try_send_request`) and
//!   goes out on another, or a new one. A request hyper has taken is never
//!   sent again (it may have reached the app): its failure is the answer;
//! - connections idle longer than the idle timeout are closed (`evict`,
//!   from the sweep), and at most `max_idle` idle ones are kept;
//! - connecting is hyper-util's `HttpConnector` (every address of a name,
//!   the connect timeout split over them, IPv6 and IPv4 raced).
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
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::either::Either;

use crate::answer::Body;
use crate::defaults::UPSTREAM_STALE_RETRIES;

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
    /// When a sweep first found it idle (`None`: busy when last looked at).
    idle_since: Option<Instant>,
}

pub(super) struct Pool {
    connector: Connector,
    conns: Mutex<Vec<Conn>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(super) fn new(connector: Connector, max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            connector,
            conns: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
            idle_timeout,
        }
    }

    /// Sends `req` (origin-form target, `Host` set) and waits for the
    /// answer's head. Cancel-safe: dropping the future closes the
    /// connection the request was on, as hyper does.
    pub(super) async fn request(
        &self,
        mut req: Request<Body>,
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
        let mut replayed = false;
        for _ in 0..UPSTREAM_STALE_RETRIES {
            let Some(mut sender) = self.ready() else {
                break;
            };
            let copy = (!replayed).then(|| replayable(&req)).flatten();
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.put(sender, &resp);
                    return Ok(resp);
                }
                Err(mut e) => match (e.take_message(), copy) {
                    // Never started: the connection was closed under us.
                    (Some(again), _) => req = again,
                    // The app closed the idle connection as the request went
                    // out (keep-alive's race): a request that is safe to
                    // repeat goes once more, as nginx's proxy_next_upstream.
                    (None, Some(copy)) if e.error().is_incomplete_message() => {
                        req = copy;
                        replayed = true;
                    }
                    (None, _) => return Err(PoolError::Failed(e.into_error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await?;
        self.put(sender, &resp);
        Ok(resp)
    }

    /// An open connection that can take a request now, taken out of the
    /// pool: the most recently used first, so the least used ones age out.
    fn ready(&self) -> Option<http1::SendRequest<Body>> {
        let mut conns = self.conns.lock();
        // Closed ones go now, not at the sweep: an app that closes after
        // every answer would otherwise grow the list by the request rate.
        conns.retain(|c| !c.sender.is_closed());
        let at = conns.iter().rposition(|c| c.sender.is_ready())?;
        Some(conns.remove(at).sender)
    }

    /// Back in the pool, busy until its answer's body is done. An upgraded
    /// connection is the tunnel's now, and hyper has let it go.
    fn put(&self, sender: http1::SendRequest<Body>, resp: &Response<Incoming>) {
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        self.conns.lock().push(Conn {
            sender,
            idle_since: None,
        });
    }

    /// The sweep: drops closed connections, closes those idle longer than
    /// the idle timeout, and the least recently used idle ones past
    /// `max_idle`.
    pub(super) fn evict(&self, now: Instant) {
        let mut conns = self.conns.lock();
        conns.retain(|c| !c.sender.is_closed());
        for c in conns.iter_mut() {
            c.idle_since = match (c.sender.is_ready(), c.idle_since) {
                (false, _) => None,
                (true, since) => Some(since.unwrap_or(now)),
            };
        }
        let idle = self.idle_timeout;
        conns.retain(|c| c.idle_since.is_none_or(|t| now.duration_since(t) <= idle));
        let mut surplus = conns
            .iter()
            .filter(|c| c.idle_since.is_some())
            .count()
            .saturating_sub(self.max_idle);
        // The front of the list was used least recently.
        conns.retain(|c| {
            let drop = surplus > 0 && c.idle_since.is_some();
            surplus -= usize::from(drop);
            !drop
        });
    }

    /// Connections in the pool, idle or busy (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.conns.lock().len()
    }

    async fn connect(&self) -> Result<http1::SendRequest<Body>, PoolError> {
        let c = &self.connector;
        // The whole of it: name, TCP and TLS.
        let io = tokio::time::timeout(c.connect_timeout, open(c))
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
        Ok(sender)
    }
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
type Stream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// Opens a TCP (and for https, TLS) connection to the upstream.
async fn open(c: &Connector) -> std::io::Result<TokioIo<Stream>> {
    use tower_service::Service;
    let mut tcp = c.tcp.clone();
    let tcp = tcp
        .call(c.dst.clone())
        .await
        .map_err(std::io::Error::other)?;
    let Some(tls) = &c.tls else {
        return Ok(TokioIo::new(Either::Left(tcp.into_inner())));
    };
    // An IPv6 literal comes bracketed in an authority.
    let host = c.authority.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(bare.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tls.connect(name, tcp.into_inner()).await?;
    Ok(TokioIo::new(Either::Right(Box::new(stream))))
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
                let open: Arc<Mutex<Vec<tokio::sync::oneshot::Sender<()>>>> = Arc::default();
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
                        for stop in closer.lock().drain(..) {
                            let _ = stop.send(());
                        }
                        // Give the connection tasks a turn to shut down.
                        tokio::task::yield_now().await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = ack.send(());
                    }
                });
                while let Ok((mut sock, _)) = listener.accept().await {
                    acc.fetch_add(1, Ordering::SeqCst);
                    let (stop_tx, mut stop) = tokio::sync::oneshot::channel();
                    open.lock().push(stop_tx);
                    let (req, ended) = (req.clone(), ended_tx.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        let mut seen = Vec::new();
                        loop {
                            let n = tokio::select! {
                                n = sock.read(&mut buf) => n.unwrap_or(0),
                                _ = &mut stop => 0,
                            };
                            if n == 0 {
                                break;
                            }
                            seen.extend_from_slice(&buf[..n]);
                            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                                seen.drain(..end + 4);
                                req.fetch_add(1, Ordering::SeqCst);
                                let answer: &[u8] = match mode {
                                    Mode::KeepAlive => {
                                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                                    }
                                    Mode::Silent => b"",
                                    Mode::Stalled => {
                                        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok"
                                    }
                                };
                                if matches!(mode, Mode::Silent)
                                    || sock.write_all(answer).await.is_err()
                                {
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

    #[tokio::test]
    async fn a_connection_is_used_again_once_its_answer_is_read() {
        let up = upstream(Mode::KeepAlive);
        let pool = up.pool(4);
        for _ in 0..10 {
            assert_eq!(body_of(pool.request(get()).await.unwrap()).await, "ok");
        }
        assert_eq!((up.accepted(), pool.len()), (1, 1));
    }

    /// A pool whose one connection the app has closed, which hyper has not
    /// noticed yet: it still looks ready.
    async fn with_a_stale_connection() -> (Upstream, Pool) {
        let up = upstream(Mode::KeepAlive);
        let pool = up.pool(4);
        assert_eq!(body_of(pool.request(get()).await.unwrap()).await, "ok");
        up.close_all_blocking();
        assert!(pool.conns.lock()[0].sender.is_ready());
        (up, pool)
    }

    #[tokio::test]
    async fn a_get_on_a_connection_closed_under_it_goes_again() {
        let (up, pool) = with_a_stale_connection().await;
        // hyper writes the GET on it, finds it closed, and the GET goes out
        // again on a new one.
        assert_eq!(body_of(pool.request(get()).await.unwrap()).await, "ok");
        assert_eq!(up.accepted(), 2);
        assert_eq!(
            up.requests.load(Ordering::SeqCst),
            2,
            "each request reached the app once"
        );
    }

    #[tokio::test]
    async fn a_post_on_a_connection_closed_under_it_is_not_sent_again() {
        let (up, pool) = with_a_stale_connection().await;
        assert!(matches!(
            pool.request(post()).await,
            Err(PoolError::Failed(_))
        ));
        assert_eq!(up.accepted(), 1, "no second connection for it");
    }

    #[tokio::test]
    async fn a_request_the_app_took_is_never_sent_again() {
        let up = upstream(Mode::Silent);
        let pool = up.pool(4);
        assert!(matches!(
            pool.request(post()).await,
            Err(PoolError::Failed(_))
        ));
        assert_eq!((up.accepted(), up.requests.load(Ordering::SeqCst)), (1, 1));
    }

    #[tokio::test]
    async fn a_busy_connection_is_not_taken() {
        let up = upstream(Mode::Stalled);
        let pool = up.pool(4);
        // Its body is not done: the connection stays busy.
        let _first = pool.request(get()).await.unwrap();
        let _second = pool.request(get()).await.unwrap();
        assert_eq!((up.accepted(), pool.len()), (2, 2));
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout_and_past_max_idle() {
        let mut up = upstream(Mode::KeepAlive);
        let pool = up.pool(2);
        // Four at once: four connections.
        let answers = futures_util::future::join_all((0..4).map(|_| pool.request(get()))).await;
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
        let resp = pool.request(req).await.unwrap();
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
            pool.request(get()).await,
            Err(PoolError::Connect(_))
        ));
    }
}
