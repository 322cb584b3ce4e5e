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
mod headers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::answer::{self as h, Body, Fault, HttpError};
use crate::metrics::{ClientError, Metrics};
use crate::routes::Upstream;
use crate::server::{BodyFault, BodyWatch};
use crate::tls::{self, Roots};

pub use body::UpstreamBody;
use headers::host;
pub use headers::{add_forwarded, is_upgrade};

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Pooled clients per upstream, one per serving thread. Rebuilt on reload,
/// reusing the pools of every upstream whose settings did not change, so a
/// reload does not cost the app a wave of new connections.
///
/// Why one per thread: hyper runs each upstream connection as a task on the
/// runtime that opened it. With one shared pool, a request served on one
/// thread often rode a connection owned by another, and every such request
/// paid a cross-thread wakeup (strace at 2 threads: one eventfd `write` per
/// proxied request).
#[derive(Clone, Default)]
pub struct Clients {
    by_name: HashMap<String, Pools>,
}

/// One upstream's pools, and its requests in flight (over every thread).
#[derive(Clone)]
struct Pools {
    upstream: Arc<Upstream>,
    per_thread: Vec<HttpClient>,
    in_flight: Arc<Semaphore>,
}

impl Clients {
    /// `threads`: how many serving threads pick a pool (`server.threads`).
    pub fn build<'a>(
        upstreams: impl IntoIterator<Item = &'a Arc<Upstream>>,
        previous: Option<&Clients>,
        pool_idle: Duration,
        threads: NonZeroUsize,
    ) -> Clients {
        let threads = threads.get();
        let mut by_name = HashMap::new();
        for up in upstreams {
            if by_name.contains_key(&up.name) {
                continue;
            }
            let reused = previous
                .and_then(|p| p.by_name.get(&up.name))
                .filter(|old| *old.upstream == **up && old.per_thread.len() == threads)
                .cloned();
            let pools = reused.unwrap_or_else(|| Pools {
                upstream: up.clone(),
                per_thread: (0..threads)
                    .map(|_| new_client(up, pool_idle, threads))
                    .collect(),
                in_flight: Arc::new(Semaphore::new(up.max_in_flight)),
            });
            by_name.insert(up.name.clone(), pools);
        }
        Clients { by_name }
    }

    /// The calling thread's pool for `upstream`, and its in-flight permits.
    fn get(&self, upstream: &Upstream) -> Option<(&HttpClient, &Arc<Semaphore>)> {
        let pools = self.by_name.get(&upstream.name)?;
        let client = pools
            .per_thread
            .get(crate::threads::serving_slot(pools.per_thread.len()))?;
        Some((client, &pools.in_flight))
    }
}

/// `threads`: idle connections are capped per thread's pool so that, over
/// all threads, an upstream keeps at most `max_in_flight` of them (the
/// descriptor reserve counts on it).
fn new_client(up: &Upstream, pool_idle: Duration, threads: usize) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(up.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(upstream_tls(up))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool_idle)
        .pool_max_idle_per_host(up.max_in_flight.div_ceil(threads.max(1)))
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// Verification for an https upstream: its `ca` bundle, else the system's
/// roots. (For a plain http upstream this is built but never used.)
fn upstream_tls(up: &Upstream) -> rustls::ClientConfig {
    let roots = match &up.ca {
        Some(ca) => Roots::Bundle(ca),
        None if up.scheme == http::uri::Scheme::HTTPS => Roots::System,
        None => Roots::Empty,
    };
    let https = matches!(roots, Roots::System);
    let (config, loaded) = tls::client_config(roots);
    if https && loaded == 0 {
        tracing::warn!(upstream = %up.name, "no system root certificates found: set `ca:` for this upstream");
    }
    config
}

/// What failed while forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream} is unreachable")]
    Connect {
        upstream: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("upstream {upstream} did not answer within {}", humantime::format_duration(*.after))]
    Timeout { upstream: String, after: Duration },
    #[error("upstream {upstream} failed: connection closed before a response")]
    Failed {
        upstream: String,
        #[source]
        source: hyper_util::client::legacy::Error,
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
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub clients: &'a Clients,
    pub peer: Peer,
    pub metrics: &'a Metrics,
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
    // The client's path and query as they are (shared, not parsed again).
    let mut target = http::uri::Parts::default();
    target.scheme = Some(upstream.scheme.clone());
    target.authority = Some(upstream.authority.clone());
    target.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    parts.uri = Uri::from_parts(target).map_err(|e| ProxyError::BadTarget(e.into()))?;
    parts.version = Version::HTTP_11;
    let out = Request::from_parts(parts, h::stream(body));

    let (mut resp, in_flight) =
        send(caller.clients, upstream, out, timeout, body_watch.as_ref()).await?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            // The spliced connection still counts against the upstream.
            tokio::spawn(splice(client_upgrade, upstream_upgrade, in_flight));
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, h::empty()));
        }
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
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
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(ProxyError::BadTarget)?;
    let mut req = Request::new(h::empty());
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let (resp, in_flight) = send(caller.clients, upstream, req, timeout, None).await?;
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
    clients: &Clients,
    upstream: &Upstream,
    req: Request<Body>,
    timeout: Duration,
    body: Option<&BodyWatch>,
) -> Result<(Response<Incoming>, OwnedSemaphorePermit), ProxyError> {
    let Some((client, in_flight)) = clients.get(upstream) else {
        // Clients are built from the same config snapshot as the routes,
        // so this is unreachable unless that wiring breaks.
        return Err(ProxyError::Unconfigured(upstream.name.clone()));
    };
    let name = || upstream.name.clone();
    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
        return Err(ProxyError::Shed { upstream: name() });
    };
    let answered = tokio::select! {
        answered = client.request(req) => answered,
        _ = head_deadline(timeout, body) => {
            return Err(match body {
                // Still reading the client's body, which sends nothing.
                Some(watch) if !watch.complete() && watch.waiting_on_client() => {
                    ProxyError::ClientBody(BodyFault::Stalled)
                }
                _ => ProxyError::Timeout { upstream: name(), after: timeout },
            });
        }
    };
    match answered {
        // Whatever the client did wrong with its body is the failure.
        Err(_) if body.and_then(BodyWatch::fault).is_some() => Err(ProxyError::ClientBody(
            body.and_then(BodyWatch::fault)
                .unwrap_or(BodyFault::Aborted),
        )),
        Err(e) if e.is_connect() => Err(ProxyError::Connect {
            upstream: name(),
            source: e,
        }),
        Err(e) => Err(ProxyError::Failed {
            upstream: name(),
            source: e,
        }),
        Ok(resp) => Ok((resp, permit)),
    }
}

/// Resolves `timeout` after the request's body last moved (after the start
/// when there is none to watch).
async fn head_deadline(timeout: Duration, body: Option<&BodyWatch>) {
    let Some(body) = body else {
        return tokio::time::sleep(timeout).await;
    };
    loop {
        let since = body.progress();
        tokio::time::sleep_until(since + timeout).await;
        if body.progress() == since {
            return;
        }
    }
}

/// Copies bytes both ways between an upgraded client and upstream connection
/// until either side closes.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _in_flight: OwnedSemaphorePermit,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "upgraded connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::uri::{Authority, Scheme};

    fn upstream() -> Arc<Upstream> {
        Arc::new(Upstream {
            name: "app".into(),
            scheme: Scheme::HTTP,
            authority: Authority::from_static("127.0.0.1:9"),
            connect_timeout: Duration::from_secs(1),
            max_in_flight: 8,
            ca_file: None,
            ca: None,
        })
    }

    /// Which of the upstream's pools `get` picks on the calling thread.
    fn picked(clients: &Clients, up: &Upstream) -> Option<usize> {
        let (chosen, _) = clients.get(up)?;
        let pools = &clients.by_name.get(&up.name)?.per_thread;
        pools.iter().position(|p| std::ptr::eq(p, chosen))
    }

    #[test]
    fn each_serving_thread_forwards_through_its_own_pool() {
        let up = upstream();
        let three = NonZeroUsize::new(3).unwrap();
        let clients = Clients::build([&up], None, Duration::from_secs(1), three);
        assert_eq!(clients.by_name["app"].per_thread.len(), 3);
        assert_eq!(
            picked(&clients, &up),
            Some(0),
            "outside the serving threads"
        );
        for n in 1..=4 {
            let (tx, rx) = std::sync::mpsc::channel();
            let (clients, up) = (clients.clone(), up.clone());
            let done = crate::threads::spawn_thread(n, move || async move {
                let _ = tx.send(picked(&clients, &up));
            })
            .unwrap();
            done.blocking_recv().unwrap();
            assert_eq!(rx.recv().unwrap(), Some(n % 3), "serving thread {n}");
        }
    }
}
