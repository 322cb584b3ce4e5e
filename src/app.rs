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
use http::{Request, Response};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::answer::Body;
use crate::broker::Broker;
use crate::config::reload::{self, ReloadStats};
use crate::config::{Config, ConfigErrors};
use crate::defaults;
use crate::memory::{Load, Trimmer};
use crate::metrics::Metrics;
use crate::poll::{self, Authorizer};
use crate::proxy::Clients;
use crate::routes::RouteAction;
use crate::server::{self, ConnSettings, Listeners, Listening, RequestBody};
use crate::threads::spawn_thread;
use crate::tls;
use crate::webhook::{self, WebhookContext};

mod public;

use public::{lean_polls, public_request};

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
    /// GRIP item ids published lately, to drop repeats.
    grip_ids: crate::grip::SeenIds,
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
        grip_ids: crate::grip::SeenIds::default(),
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
    let broker = shared.services.broker.clone();
    tokio::spawn(
        metrics
            .clone()
            .sample_until(shutdown.clone(), move || broker.is_ready()),
    );
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
                shared.grip_ids.expire();
                let (channels, _) = shared.services.broker.totals();
                let open: usize = shared.connections().iter().map(|(_, n)| n).sum();
                let load = Load {
                    objects: shared.services.metrics.held() + open + channels + shared.grip_ids.len(),
                    bytes: crate::broker::held_bytes(),
                };
                let now = tokio::time::Instant::now();
                shared.active.load().clients.evict_idle(now);
                if trimmer.check(load, now, crate::memory::release) {
                    shared.services.metrics.trimmed();
                }
            }
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

async fn webhook_request(shared: &Shared, req: Request<RequestBody>) -> Response<Body> {
    let active = shared.active.load_full();
    let cx = WebhookContext {
        broker: &shared.services.broker,
        config: &active.config,
        metrics: &shared.services.metrics,
        shutdown: &shared.services.shutdown,
        connections: shared.connections(),
        grip_ids: &shared.grip_ids,
    };
    webhook::handle(req, cx).await
}
