//! Forwarding to upstreams: the only code that talks to the app.
//!
//! Never holds a request: long polls are routed to `poll` before they get
//! here. Bodies stream both ways (no buffering), connections are pooled per
//! upstream, and each failure maps to one status: connect -> 502, no response
//! head within the route timeout -> 504.

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
use tracing::debug;

use crate::http::{self as h, Body, Fault, HttpError};
use crate::routes::Upstream;
use crate::tls::{self, Roots};

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
    by_name: HashMap<String, (Arc<Upstream>, Vec<HttpClient>)>,
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
                .filter(|(old, pools)| **old == **up && pools.len() == threads)
                .map(|(_, pools)| pools.clone());
            let pools =
                reused.unwrap_or_else(|| (0..threads).map(|_| new_client(up, pool_idle)).collect());
            by_name.insert(up.name.clone(), (up.clone(), pools));
        }
        Clients { by_name }
    }

    /// The calling thread's pool for `upstream`.
    fn get(&self, upstream: &Upstream) -> Option<&HttpClient> {
        let (_, pools) = self.by_name.get(&upstream.name)?;
        pools.get(crate::server::serving_slot(pools.len()))
    }
}

fn new_client(up: &Upstream, pool_idle: Duration) -> HttpClient {
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
}

impl HttpError for ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect { .. } | ProxyError::Failed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadTarget(_) => StatusCode::BAD_REQUEST,
            ProxyError::Unconfigured(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn fault(&self) -> Fault {
        match self {
            ProxyError::Connect { .. } | ProxyError::Failed { .. } | ProxyError::Timeout { .. } => {
                Fault::Upstream
            }
            ProxyError::BadTarget(_) => Fault::Client,
            ProxyError::Unconfigured(_) => Fault::Internal,
        }
    }
}

impl ProxyError {
    /// Short label for metrics and logs: "connect", "timeout", "failed", "bad_target".
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Connect { .. } => "connect",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::Failed { .. } => "failed",
            ProxyError::BadTarget(_) => "bad_target",
            ProxyError::Unconfigured(_) => "unconfigured",
        }
    }
}

/// Who sent the request, as seen by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// "http" or "https", for X-Forwarded-Proto.
    pub proto: &'static str,
}

/// Forwards `req` to `upstream` and returns its response, streamed.
///
/// # Errors
/// See [`ProxyError`]; the caller renders it with `http::error_response`.
pub async fn forward<B>(
    mut req: Request<B>,
    clients: &Clients,
    upstream: &Upstream,
    timeout: Duration,
    peer: Peer,
) -> Result<Response<Body>, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<h::BoxError>,
{
    let upgrade = is_upgrade(req.headers()) && req.version() == Version::HTTP_11;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

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
    add_forwarded(&mut parts.headers, peer.addr.ip(), peer.proto, host);
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

    let mut resp = send(clients, upstream, out, timeout).await?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice(client_upgrade, upstream_upgrade));
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, h::empty()));
        }
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(parts, h::stream(body)))
}

/// Sends a body-less `GET path_and_query` to `upstream` carrying the
/// client's end-to-end headers: the authorization check of poll routes.
///
/// # Errors
/// As [`forward`].
pub async fn subrequest(
    clients: &Clients,
    upstream: &Upstream,
    path_and_query: &str,
    client_headers: &http::HeaderMap,
    timeout: Duration,
    peer: Peer,
) -> Result<Response<Incoming>, ProxyError> {
    let mut headers = client_headers.clone();
    headers::strip_hop_by_hop(&mut headers, false);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_TYPE);
    let host = host(&headers);
    add_forwarded(&mut headers, peer.addr.ip(), peer.proto, host);
    let uri = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(ProxyError::BadTarget)?;
    let mut req = Request::new(h::empty());
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    send(clients, upstream, req, timeout).await
}

/// Sends a prepared request; the one place that maps client errors to
/// [`ProxyError`]s.
async fn send(
    clients: &Clients,
    upstream: &Upstream,
    req: Request<Body>,
    timeout: Duration,
) -> Result<Response<Incoming>, ProxyError> {
    let Some(client) = clients.get(upstream) else {
        // Clients are built from the same config snapshot as the routes,
        // so this is unreachable unless that wiring breaks.
        return Err(ProxyError::Unconfigured(upstream.name.clone()));
    };
    let name = || upstream.name.clone();
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(ProxyError::Timeout {
            upstream: name(),
            after: timeout,
        }),
        Ok(Err(e)) if e.is_connect() => Err(ProxyError::Connect {
            upstream: name(),
            source: e,
        }),
        Ok(Err(e)) => Err(ProxyError::Failed {
            upstream: name(),
            source: e,
        }),
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Copies bytes both ways between an upgraded client and upstream connection
/// until either side closes.
async fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
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
            ca_file: None,
            ca: None,
        })
    }

    /// Which of the upstream's pools `get` picks on the calling thread.
    fn picked(clients: &Clients, up: &Upstream) -> Option<usize> {
        let chosen = clients.get(up)?;
        let (_, pools) = clients.by_name.get(&up.name)?;
        pools.iter().position(|p| std::ptr::eq(p, chosen))
    }

    #[test]
    fn each_serving_thread_forwards_through_its_own_pool() {
        let up = upstream();
        let three = NonZeroUsize::new(3).unwrap();
        let clients = Clients::build([&up], None, Duration::from_secs(1), three);
        assert_eq!(clients.by_name["app"].1.len(), 3);
        assert_eq!(
            picked(&clients, &up),
            Some(0),
            "outside the serving threads"
        );
        for n in 1..=4 {
            let (tx, rx) = std::sync::mpsc::channel();
            let (clients, up) = (clients.clone(), up.clone());
            let done = crate::server::spawn_thread(n, move || async move {
                let _ = tx.send(picked(&clients, &up));
            })
            .unwrap();
            done.blocking_recv().unwrap();
            assert_eq!(rx.recv().unwrap(), Some(n % 3), "serving thread {n}");
        }
    }
}
