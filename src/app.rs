//! Wires every module into a running instance and owns its tasks.
//!
//! `main` and the integration tests drive the same API: bind listeners,
//! [`start`], then wait on [`Running`]. Each request loads the config
//! snapshot once and keeps it for its whole life, so a held poll finishes
//! under the config it started with while new requests see a reload at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::answer::{self as h, Body, Fault, HttpError};
use crate::broker::Broker;
use crate::config::reload::{self, ReloadStats};
use crate::config::{Config, ConfigErrors};
use crate::defaults;
use crate::memory::Trimmer;
use crate::metrics::Metrics;
use crate::poll::{self, Authorizer, PollContext};
use crate::proxy::{self, Clients, Peer};
use crate::routes::{NoRoute, Route, RouteAction};
use crate::server::{
    self, ConnInfo, ConnSettings, Lean, LeanFuture, LeanRequest, Listeners, Listening, RequestBody,
};
use crate::threads::spawn_thread;
use crate::tls;
use crate::webhook::{self, WebhookContext};

/// Optional wiring for `start`.
#[derive(Default)]
pub struct Options {
    /// Watched for hot reload when set.
    pub config_path: Option<PathBuf>,
    /// Notified by SIGHUP (see `shutdown::Signals::watch`).
    pub reload: Option<Arc<Notify>>,
}

/// What one request works with: the config and the clients built from it.
struct Active {
    config: Config,
    clients: Clients,
}

struct Shared {
    active: ArcSwap<Active>,
    /// The public listener's certificates, when it speaks TLS.
    tls: Option<Arc<tls::Resolver>>,
    /// The broker, metrics, shutdown and poll limits (what polls borrow).
    services: poll::Services,
    /// Both listeners' caps: they know how many connections are open.
    listening: [Listening; 2],
}

impl Shared {
    /// Connections open now, by listener.
    fn connections(&self) -> [(&'static str, usize); 2] {
        self.listening
            .each_ref()
            .map(|l| (l.settings.name, l.open()))
    }
}

/// A started instance.
pub struct Running {
    pub public_addr: SocketAddr,
    pub webhook_addr: SocketAddr,
    /// Cancel to stop (what SIGTERM does).
    pub shutdown: CancellationToken,
    pub metrics: Metrics,
    /// Reload outcomes, for tests and metrics.
    pub reloads: watch::Receiver<ReloadStats>,
    join: JoinHandle<()>,
}

impl Running {
    /// Resolves when the instance has stopped and drained.
    ///
    /// # Errors
    /// When the supervisor task panicked (a bug).
    pub async fn wait(self) -> Result<(), tokio::task::JoinError> {
        self.join.await
    }
}

/// Starts serving on `listeners` with `config`.
///
/// # Errors
/// When a listener's local address cannot be read.
pub fn start(config: Config, listeners: Listeners, options: Options) -> std::io::Result<Running> {
    let mut public = listeners.public.into_iter();
    let first = public
        .next()
        .ok_or_else(|| std::io::Error::other("no public listener"))?;
    let public_addr = first.local_addr()?;
    let first = first.into_std()?;
    // The other sockets move to threads of their own (see `spawn_thread`);
    // each runtime registers its socket itself (`serve_public`).
    let others = public
        .map(TcpListener::into_std)
        .collect::<std::io::Result<Vec<_>>>()?;
    let webhook_addr = listeners.webhook.local_addr()?;
    let shutdown = CancellationToken::new();
    let metrics = Metrics::default();
    let public = Listening::new(
        ConnSettings::new("public", &config.server, config.server.max_connections),
        metrics.clone(),
        shutdown.clone(),
    );
    let webhook_listening = Listening::new(
        ConnSettings::new("webhook", &config.server, defaults::WEBHOOK_MAX_CONNECTIONS),
        metrics.clone(),
        shutdown.clone(),
    );
    let clients = build_clients(&config, None);
    metrics.config_loaded(0, &config.source_hash);
    let resolver = config.tls.clone().map(tls::Resolver::new);
    let acceptor = match &resolver {
        Some(r) => Some(tls::acceptor(r.clone()).map_err(std::io::Error::other)?),
        None => None,
    };
    let watched = config.watched_files();
    let shared = Arc::new(Shared {
        tls: resolver,
        services: poll::Services {
            broker: Broker::new(&config.broker, config.server.threads)
                .map_err(std::io::Error::other)?,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            admission: Arc::default(),
            authorizer: Authorizer::default(),
        },
        active: ArcSwap::from_pointee(Active { config, clients }),
        listening: [public.clone(), webhook_listening.clone()],
    });
    let (reload_tx, reloads) = watch::channel(ReloadStats::default());

    if let Some(path) = options.config_path {
        let shared = shared.clone();
        let sighup = options.reload.unwrap_or_default();
        let config_file = path.clone();
        let files = move |config: &Config| {
            std::iter::once(config_file.clone())
                .chain(config.watched_files())
                .collect()
        };
        let watch = reload::FileWatch::new(std::iter::once(path.clone()).chain(watched).collect());
        tokio::spawn(reload::run(
            path.clone(),
            watch,
            defaults::RELOAD_DEBOUNCE,
            sighup,
            shutdown.clone(),
            move |result| {
                apply_reload(&shared, &reload_tx, result);
                files(&shared.active.load().config)
            },
        ));
    }
    tokio::spawn(sweep(shared.clone()));
    tokio::spawn(shared.services.broker.clone().run(shutdown.clone()));

    let join = tokio::spawn(async move {
        let workers: Vec<_> = others
            .into_iter()
            .enumerate()
            .filter_map(|(i, listener)| {
                let (shared, acceptor, public) = (shared.clone(), acceptor.clone(), public.clone());
                spawn_thread(i + 1, move || {
                    serve_public(shared, listener, acceptor, public)
                })
            })
            .collect();
        let hook = {
            let shared = shared.clone();
            move |req, _conn| {
                let shared = shared.clone();
                async move { webhook_request(&shared, req).await }
            }
        };
        let webhook = async {
            let graceful = GracefulShutdown::new();
            server::run(
                listeners.webhook,
                None,
                webhook_listening,
                hook,
                None,
                &graceful,
            )
            .await;
            drain(&shared, graceful).await;
        };
        tokio::join!(
            serve_public(shared.clone(), first, acceptor, public),
            webhook
        );
        for done in workers {
            let _ = done.await;
        }
        info!("stopped");
    });

    Ok(Running {
        public_addr,
        webhook_addr,
        shutdown,
        metrics,
        reloads,
        join,
    })
}

fn build_clients(config: &Config, previous: Option<&Clients>) -> Clients {
    let upstreams = config.routes.iter().filter_map(|r| match &r.action {
        RouteAction::Proxy { upstream, .. } => Some(upstream),
        RouteAction::Poll(poll) => poll.authorize.as_ref().map(|a| &a.upstream),
    });
    Clients::build(
        upstreams,
        previous,
        defaults::UPSTREAM_POOL_IDLE,
        config.server.threads,
    )
}

fn apply_reload(
    shared: &Shared,
    stats: &watch::Sender<ReloadStats>,
    result: Result<Config, ConfigErrors>,
) {
    match result {
        Ok(config) => {
            let old = shared.active.load();
            for key in config.restart_only_changes(&old.config) {
                warn!(
                    key,
                    "config change needs a restart to apply; running with the old value"
                );
            }
            let clients = build_clients(&config, Some(&old.clients));
            if let (Some(resolver), Some(store)) = (&shared.tls, &config.tls) {
                // New handshakes use the reloaded certificates from here on.
                resolver.set(store.clone());
            }
            let hash = config.source_hash.clone();
            shared.active.store(Arc::new(Active { config, clients }));
            stats.send_modify(|s| {
                s.generation += 1;
                s.ok += 1;
            });
            shared
                .services
                .metrics
                .config_loaded(stats.borrow().generation, &hash);
            info!(hash = %hash, "config reloaded");
        }
        Err(errors) => {
            stats.send_modify(|s| s.failed += 1);
            shared.services.metrics.config_rejected();
            error!(errors = %errors, "config rejected; the running config stays in force");
        }
    }
}

/// Trims expired history and frees idle channels until shutdown; hands
/// freed memory back to the system after a peak (see `memory`).
async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(defaults::SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trimmer = Trimmer::default();
    loop {
        tokio::select! {
            _ = shared.services.shutdown.cancelled() => return,
            _ = tick.tick() => {
                shared.services.broker.sweep(shared.active.load().config.buffer);
                let (channels, _) = shared.services.broker.totals();
                let open: usize = shared.connections().iter().map(|(_, n)| n).sum();
                let load = shared.services.metrics.held() + open + channels;
                if trimmer.check(load, tokio::time::Instant::now()) {
                    shared.services.metrics.trimmed();
                }
            }
        }
    }
}

/// Errors of the public router itself.
#[derive(Debug, thiserror::Error)]
enum RouteError {
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed on this route")]
    Method,
}

impl HttpError for RouteError {
    fn status(&self) -> StatusCode {
        match self {
            RouteError::NotFound => StatusCode::NOT_FOUND,
            RouteError::Method => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn fault(&self) -> Fault {
        match self {
            RouteError::NotFound | RouteError::Method => Fault::Client,
        }
    }
}

/// Serves one public socket until shutdown, then drains its connections.
async fn serve_public(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    public: Listening,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "cannot serve a public socket");
            return;
        }
    };
    if let Some(relay) = shared.services.broker.relay_here() {
        tokio::spawn(relay);
    }
    let graceful = GracefulShutdown::new();
    let listening = public;
    let handler = {
        let shared = shared.clone();
        move |req, conn| public_request(shared.clone(), req, conn)
    };
    let lean = Some(lean_polls(&shared));
    server::run(listener, acceptor, listening, handler, lean, &graceful).await;
    drain(&shared, graceful).await;
}

/// Waits for `graceful`'s connections, up to the drain deadline in force
/// at shutdown (it may have been reloaded).
async fn drain(shared: &Shared, graceful: GracefulShutdown) {
    let deadline = shared.active.load().config.shutdown.drain_timeout;
    if tokio::time::timeout(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(after = %humantime::format_duration(deadline), "drain deadline passed; closing remaining connections");
    }
}

/// The lean HTTP/1 path serves long polls: a held poll then costs no hyper
/// connection buffers (see `server/lean.rs`). One route lookup decides.
fn lean_polls(shared: &Arc<Shared>) -> Lean {
    let shared = shared.clone();
    Lean {
        serve: Arc::new(move |req, conn| lean_request(&shared, req, conn)),
    }
}

fn lean_request(shared: &Arc<Shared>, req: LeanRequest, conn: ConnInfo) -> Option<LeanFuture> {
    let active = shared.active.load_full();
    let found = active
        .config
        .routes
        .find(req.method(), request_host(&req), req.uri().path());
    let route = match found {
        Ok(route) if matches!(route.action, RouteAction::Poll(_)) => route.clone(),
        _ => return None,
    };
    Some(Box::pin(routed(shared.clone(), active, route, req, conn)))
}

async fn public_request(
    shared: Arc<Shared>,
    req: Request<RequestBody>,
    conn: ConnInfo,
) -> Response<Body> {
    let active = shared.active.load_full();
    let found = active
        .config
        .routes
        .find(req.method(), request_host(&req), req.uri().path())
        .cloned();
    match found {
        Ok(route) => routed(shared, active, route, req, conn).await,
        Err(no_route) => {
            let resp = match no_route {
                NoRoute::NotFound => h::error_response(&RouteError::NotFound),
                NoRoute::MethodNotAllowed(allowed) => {
                    let mut resp = h::error_response(&RouteError::Method);
                    let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
                    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                        resp.headers_mut().insert(header::ALLOW, v);
                    }
                    resp
                }
            };
            let started = tokio::time::Instant::now();
            access_log(
                req.method(),
                req.uri().path(),
                conn.peer,
                None,
                &resp,
                started,
            );
            resp
        }
    }
}

/// Serves a request on the route it was matched to (looked up once,
/// under `active`).
async fn routed<B>(
    shared: Arc<Shared>,
    active: Arc<Active>,
    route: Arc<Route>,
    req: Request<B>,
    conn: ConnInfo,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<h::BoxError>,
{
    let started = tokio::time::Instant::now();
    let method = req.method().clone();
    // A clone of the URI shares its bytes: no copy of the path per request.
    let uri = req.uri().clone();
    let peer = Peer {
        addr: conn.peer,
        proto: if conn.tls { "https" } else { "http" },
    };
    let resp = match &route.action {
        RouteAction::Proxy { upstream, timeout } => {
            // Boxed: an idle held poll should not carry a proxy future's size.
            let forwarded = Box::pin(proxy::forward(
                req,
                proxy::Caller {
                    clients: &active.clients,
                    peer,
                    metrics: &shared.services.metrics,
                },
                upstream,
                *timeout,
            ))
            .await;
            let resp = forwarded.unwrap_or_else(|e| {
                e.count(&shared.services.metrics, &upstream.name);
                h::error_response(&e)
            });
            let head = started.elapsed().as_secs_f64();
            shared
                .services
                .metrics
                .proxied(&route.name, resp.status().as_u16(), head);
            resp
        }
        RouteAction::Poll(poll_route) => {
            let rest = uri.path().get(route.prefix.len()..).unwrap_or_default();
            let cx = PollContext {
                route: &route.name,
                config: &active.config,
                services: &shared.services,
                clients: &active.clients,
                peer,
                queue: conn.queue.as_ref(),
            };
            Box::pin(poll::handle(req, poll_route, rest, cx)).await
        }
    };
    access_log(&method, uri.path(), conn.peer, Some(&route), &resp, started);
    resp
}

/// One line per public request, under the target `pollgate::access`.
fn access_log(
    method: &http::Method,
    path: &str,
    peer: std::net::SocketAddr,
    route: Option<&Route>,
    resp: &Response<Body>,
    started: tokio::time::Instant,
) {
    let upstream = route.and_then(|r| match &r.action {
        RouteAction::Proxy { upstream, .. } => Some(upstream.name.as_str()),
        RouteAction::Poll(_) => None,
    });
    info!(
        target: "pollgate::access",
        method = %method,
        path = %path,
        peer = %peer,
        route = route.map_or("-", |r| r.name.as_str()),
        upstream = upstream.unwrap_or("-"),
        status = resp.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
}

async fn webhook_request(shared: &Shared, req: Request<RequestBody>) -> Response<Body> {
    let active = shared.active.load_full();
    let cx = WebhookContext {
        broker: &shared.services.broker,
        config: &active.config,
        metrics: &shared.services.metrics,
        shutdown: &shared.services.shutdown,
        connections: shared.connections(),
    };
    webhook::handle(req, cx).await
}

/// The host the client addressed, without port: the Host header, or the
/// HTTP/2 `:authority`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?,
        None => req.uri().host()?,
    };
    Some(strip_port(raw))
}

/// "example.com:8080" -> "example.com"; "[::1]:80" -> "[::1]".
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
