//! Forwarding to upstreams: the only code that talks to the app.
//!
//! Never holds a request: long polls are routed to `poll` before they get
//! here. Bodies stream both ways (no buffering), connections are pooled per
//! upstream, and each failure maps to one status, by whose fault it is:
//! - the app: connect -> 502, no response head within the route timeout ->
//!   504, a response body that stalls for the route timeout between two
//!   reads -> cut (`body::UpstreamBody`);
//! - pollgate protecting the app: more than `max_in_flight` requests -> 503
//!   with `Retry-After`, counted as shed;
//! - the client: a request body that stops or is abandoned -> 400 (or
//!   nothing, if the client is gone), never an upstream error.

mod body;
mod clients;
mod headers;
mod pool;
mod socket;

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::answer::{self as h, Body, Fault, HttpError};
use crate::metrics::{ClientError, Metrics};
use crate::routes::Upstream;
use crate::server::{BodyFault, BodyWatch, ConnSlot};

pub use body::UpstreamBody;
pub use clients::Clients;
use headers::host;
pub use headers::{add_forwarded, is_upgrade};
use pool::PoolError;

/// What failed while forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream} is unreachable")]
    Connect {
        upstream: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {upstream} did not answer within {}", humantime::format_duration(*.after))]
    Timeout { upstream: String, after: Duration },
    #[error("upstream {upstream} failed: connection closed before a response")]
    Failed {
        upstream: String,
        #[source]
        source: hyper::Error,
    },
    #[error("invalid request target")]
    BadTarget(#[source] http::Error),
    #[error("upstream {0} has no client")]
    Unconfigured(String),
    #[error("upstream {upstream} is busy: too many requests in flight, retry shortly")]
    Shed { upstream: String },
    #[error("{0}")]
    ClientBody(BodyFault),
}

impl HttpError for ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect { .. } | ProxyError::Failed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadTarget(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Unconfigured(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Shed { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn fault(&self) -> Fault {
        match self {
            ProxyError::Connect { .. } | ProxyError::Failed { .. } | ProxyError::Timeout { .. } => {
                Fault::Upstream
            }
            ProxyError::BadTarget(_) | ProxyError::ClientBody(_) => Fault::Client,
            ProxyError::Unconfigured(_) => Fault::Internal,
            ProxyError::Shed { .. } => Fault::Capacity,
        }
    }
}

impl ProxyError {
    /// Counts this error against whoever caused it: the app's failures in
    /// `pollgate_upstream_errors_total`, sheds in their own counter, the
    /// client's faults in `pollgate_client_errors_total`.
    pub fn count(&self, metrics: &Metrics, upstream: &str) {
        match self {
            ProxyError::Connect { .. } | ProxyError::Timeout { .. } | ProxyError::Failed { .. } => {
                metrics.upstream_error(upstream, self.kind())
            }
            ProxyError::Shed { .. } => metrics.shed(upstream),
            ProxyError::ClientBody(BodyFault::Aborted) => {
                metrics.client_error(ClientError::body_aborted)
            }
            ProxyError::ClientBody(BodyFault::Stalled) => {
                metrics.client_error(ClientError::body_timeout)
            }
            ProxyError::BadTarget(_) | ProxyError::Unconfigured(_) => {}
        }
    }

    /// Short label for metrics and logs: "connect", "timeout", "failed", "bad_target".
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Connect { .. } => "connect",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::Failed { .. } => "failed",
            ProxyError::BadTarget(_) => "bad_target",
            ProxyError::Unconfigured(_) => "unconfigured",
            ProxyError::Shed { .. } => "shed",
            ProxyError::ClientBody(BodyFault::Aborted) => "body_aborted",
            ProxyError::ClientBody(BodyFault::Stalled) => "body_timeout",
        }
    }
}

/// Who is asking an upstream, and with what: the pools, the client, where
/// the upstream's failures are counted.
#[derive(Clone)]
pub struct Caller<'a> {
    pub clients: &'a Clients,
    pub peer: Peer,
    pub metrics: &'a Metrics,
    /// The client connection's place under its listener's cap: an upgrade
    /// spliced from it keeps it until the tunnel closes.
    pub slot: Option<ConnSlot>,
}

/// Who sent the request, as seen by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// "http" or "https", for X-Forwarded-Proto.
    pub proto: &'static str,
}

/// Forwards `req` to `upstream` and returns its response, streamed. The
/// route `timeout` bounds the wait for the response head and each wait for
/// the body's next bytes.
///
/// # Errors
/// See [`ProxyError`]; the caller renders it with `answer::error_response`.
pub async fn forward<B>(
    mut req: Request<B>,
    caller: Caller<'_>,
    upstream: &Upstream,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<h::BoxError>,
{
    let upgrade = is_upgrade(req.headers()) && req.version() == Version::HTTP_11;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let body_watch = req.extensions().get::<BodyWatch>().cloned();

    let (mut parts, body) = req.into_parts();
    // The Host the client used: its header, else HTTP/2's :authority (which
    // the app then also gets as Host). Header values are shared bytes: no copy.
    let host = match host(&parts.headers) {
        Some(host) => Some(host),
        None => {
            let authority = parts.uri.authority().map(|a| a.as_str());
            let host = authority.and_then(|a| HeaderValue::from_str(a).ok());
            if let Some(host) = &host {
                parts.headers.insert(header::HOST, host.clone());
            }
            host
        }
    };
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    add_forwarded(
        &mut parts.headers,
        caller.peer.addr.ip(),
        caller.peer.proto,
        host,
    );
    // The client's path and query as they are (shared, not parsed again),
    // in origin-form: the pool's connection is the upstream's already.
    parts.uri = Uri::from(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    parts.version = Version::HTTP_11;
    let out = Request::from_parts(parts, h::stream(body));

    let (mut resp, in_flight) = send(&caller, upstream, out, timeout, body_watch.as_ref()).await?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            // A tunnel is a connection, not a request in flight: it counts
            // under the listener's connection cap (its slot goes with it),
            // and ends when idle, not against the upstream's requests.
            drop(in_flight);
            tokio::spawn(splice(client_upgrade, upstream_upgrade, caller.slot));
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, h::empty()));
        }
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    // The answer is pollgate's, in pollgate's version (as nginx does): an
    // app's `HTTP/1.0` would make an HTTP/1.1 client close a connection
    // pollgate keeps.
    parts.version = Version::HTTP_11;
    let body = UpstreamBody::new(
        body,
        timeout,
        in_flight,
        upstream.name.clone(),
        caller.metrics.clone(),
    );
    Ok(Response::from_parts(parts, h::stream(body)))
}

/// Sends a body-less `GET path_and_query` to `upstream` carrying the
/// client's end-to-end headers: the authorization check of poll routes.
///
/// # Errors
/// As [`forward`].
pub async fn subrequest(
    caller: Caller<'_>,
    upstream: &Upstream,
    path_and_query: &str,
    client_headers: &http::HeaderMap,
    timeout: Duration,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let mut headers = client_headers.clone();
    headers::strip_hop_by_hop(&mut headers, false);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_TYPE);
    let host = host(&headers);
    add_forwarded(&mut headers, caller.peer.addr.ip(), caller.peer.proto, host);
    let uri = Uri::builder()
        .path_and_query(path_and_query)
        .build()
        .map_err(ProxyError::BadTarget)?;
    let mut req = Request::new(h::empty());
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let (resp, in_flight) = send(&caller, upstream, req, timeout, None).await?;
    let (name, metrics) = (upstream.name.clone(), caller.metrics.clone());
    Ok(resp.map(|body| UpstreamBody::new(body, timeout, in_flight, name, metrics)))
}

/// Sends a prepared request; the one place that maps the client's errors
/// to [`ProxyError`]s. The permit is the request's place among the
/// upstream's `max_in_flight`: the caller keeps it while the body streams.
///
/// `timeout` counts from when the request's body was last read (from the
/// start when it has none): an upload that takes longer than the route
/// timeout is not the app's fault, and neither is a client that stalls it.
async fn send(
    caller: &Caller<'_>,
    upstream: &Upstream,
    req: Request<Body>,
    timeout: Duration,
    body: Option<&BodyWatch>,
) -> Result<(Response<Incoming>, OwnedSemaphorePermit), ProxyError> {
    let Some((pool, in_flight)) = caller.clients.get(upstream) else {
        // Clients are built from the same config snapshot as the routes,
        // so this is unreachable unless that wiring breaks.
        return Err(ProxyError::Unconfigured(upstream.name.clone()));
    };
    let name = || upstream.name.clone();
    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
        return Err(ProxyError::Shed { upstream: name() });
    };
    let answered = tokio::select! {
        answered = pool.request(req, |retry| caller.metrics.upstream_retry(&upstream.name, retry.label())) => answered,
        _ = head_deadline(timeout, body) => {
            return Err(ProxyError::Timeout { upstream: name(), after: timeout });
        }
    };
    match answered {
        // Whatever the client did wrong with its body is the failure.
        Err(_) if body.and_then(BodyWatch::fault).is_some() => Err(ProxyError::ClientBody(
            body.and_then(BodyWatch::fault)
                .unwrap_or(BodyFault::Aborted),
        )),
        Err(PoolError::Connect(source)) => Err(ProxyError::Connect {
            upstream: name(),
            source,
        }),
        Err(PoolError::Failed(source)) => Err(ProxyError::Failed {
            upstream: name(),
            source,
        }),
        Ok(resp) => Ok((resp, permit)),
    }
}

/// Resolves `timeout` after the request's body last moved (after the start
/// when there is none to watch). While the body waits on the client, the
/// client's own deadline (`server.body_timeout`, in `RequestBody`) decides,
/// not this one: the app is not at fault for an upload that has not come.
async fn head_deadline(timeout: Duration, body: Option<&BodyWatch>) {
    let Some(body) = body else {
        return tokio::time::sleep(timeout).await;
    };
    loop {
        let since = body.progress();
        tokio::time::sleep_until(since + timeout).await;
        if body.progress() != since {
            continue;
        }
        if !body.complete() && body.waiting_on_client() {
            // Look again in a while; the body fails first if the client is gone.
            tokio::time::sleep(timeout).await;
            continue;
        }
        return;
    }
}

/// Copies bytes both ways between an upgraded client and upstream connection
/// until both sides have closed, either fails, or nothing has moved either
/// way for `UPGRADED_IDLE_TIMEOUT`. Holds the client connection's slot.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _slot: Option<ConnSlot>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (client_in, client_out) = tokio::io::split(TokioIo::new(client));
    let (upstream_in, upstream_out) = tokio::io::split(TokioIo::new(upstream));
    let moved = parking_lot::Mutex::new(tokio::time::Instant::now());
    let idle = crate::defaults::UPGRADED_IDLE_TIMEOUT;
    let both = tokio::try_join!(
        pump(client_in, upstream_out, &moved, idle),
        pump(upstream_in, client_out, &moved, idle),
    );
    if let Err(e) = both {
        debug!(error = %e, "upgraded connection ended");
    }
}

/// One direction of a tunnel: copies until EOF (then shuts the other side's
/// writing down), and fails once neither direction has moved for `idle`.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    moved: &parking_lot::Mutex<tokio::time::Instant>,
    idle: Duration,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "idle tunnel");
    let mut buf = vec![0; crate::defaults::UPGRADED_COPY_BYTES];
    loop {
        let deadline = *moved.lock() + idle;
        let n = match tokio::time::timeout_at(deadline, from.read(&mut buf)).await {
            Ok(read) => read?,
            // The other direction may have moved meanwhile.
            Err(_) if *moved.lock() + idle > tokio::time::Instant::now() => continue,
            Err(_) => return Err(timed_out()),
        };
        if n == 0 {
            return to.shutdown().await;
        }
        *moved.lock() = tokio::time::Instant::now();
        let deadline = *moved.lock() + idle;
        tokio::time::timeout_at(deadline, to.write_all(&buf[..n]))
            .await
            .map_err(|_| timed_out())??;
        *moved.lock() = tokio::time::Instant::now();
    }
}
