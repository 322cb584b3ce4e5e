//! Counters, gauges and histograms that the handlers move and operators
//! scrape (`GET /metrics` on the webhook listener, Prometheus text format).
//!
//! Every update is lock-free or a short read lock in `prometheus-client`'s
//! families. The count of held polls can also be watched
//! ([`Metrics::held_changes`]), so a test can await "n polls are held"
//! instead of sleeping.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

mod labels;

pub use labels::{ClientError, PollOutcome, ResultKind};
use labels::{
    ClientErrorLabel, HashLabel, LimitLabel, ListenerLabel, OutcomeLabel, ProxyLabel, ResultLabel,
    RouteLabel, UpstreamErrorLabel, UpstreamLabel,
};

struct Inner {
    registry: Registry,
    polls_held: Family<RouteLabel, Gauge>,
    polls_ended: Family<OutcomeLabel, Counter>,
    publishes: Family<ResultLabel, Counter>,
    delivered: Counter,
    delivery_latency: Histogram,
    wakeups_missed: Counter,
    log_lines_dropped: Counter,
    proxy_requests: Family<ProxyLabel, Counter>,
    proxy_duration: Family<RouteLabel, Histogram>,
    upstream_errors: Family<UpstreamErrorLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    config_generation: Gauge,
    config_info: Family<HashLabel, Gauge>,
    channels: Gauge,
    buffered: Gauge,
    broker_up: Gauge,
    broker_errors: Counter,
    client_errors: Family<ClientErrorLabel, Counter>,
    connections: Family<ListenerLabel, Gauge>,
    connection_caps: Family<ListenerLabel, Counter>,
    shed: Family<UpstreamLabel, Counter>,
    limit_refusals: Family<LimitLabel, Counter>,
    trims: Counter,
    /// Polls held now, all routes. An atomic: it moves twice per poll, and a
    /// `watch` write takes nine locks (hold + drop measured 157 -> 43 ns on
    /// one thread, 1,010 -> 242 ns with two threads at it).
    held_total: AtomicUsize,
    /// `held_total` for those who wait on it; written only while someone does.
    held_watch: watch::Sender<usize>,
    /// Bumped by every accepted publish: the status page long-polls on it.
    activity: watch::Sender<u64>,
}

/// Shared metrics handle; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` under `name` and hands it back.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Latency buckets from 0.5 ms to ~16 s: a delivery is sub-millisecond when
/// healthy, and a proxied request may legitimately take seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pollgate");
        let polls_held = registered(
            &mut registry,
            "polls_held",
            "Long polls held right now, by route",
            Family::<RouteLabel, Gauge>::default(),
        );
        let polls_ended = registered(
            &mut registry,
            "polls",
            "Long polls ended, by outcome",
            Family::<OutcomeLabel, Counter>::default(),
        );
        let publishes = registered(
            &mut registry,
            "publishes",
            "Publish requests (items), accepted or rejected",
            Family::<ResultLabel, Counter>::default(),
        );
        let delivered = registered(
            &mut registry,
            "messages_delivered",
            "Messages sent to polling clients",
            Counter::default(),
        );
        let delivery_latency = registered(
            &mut registry,
            "delivery_latency_seconds",
            "Time from a message's publish to its delivery in a poll answer",
            latency_histogram(),
        );
        let wakeups_missed = registered(&mut registry, "wakeups_missed", "Held polls that reached their timeout although a message for them had been accepted (should stay 0)", Counter::default());
        let log_lines_dropped = registered(
            &mut registry,
            "log_lines_dropped",
            "Log lines dropped because stderr could not keep up (see the README's Logs)",
            Counter::default(),
        );
        let proxy_requests = registered(
            &mut registry,
            "proxy_requests",
            "Proxied requests, by route and status class",
            Family::<ProxyLabel, Counter>::default(),
        );
        let proxy_duration = registered(
            &mut registry,
            "proxy_duration_seconds",
            "Time to the upstream's response head, by route",
            Family::<RouteLabel, Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
        );
        let upstream_errors = registered(
            &mut registry,
            "upstream_errors",
            "Upstream failures, by upstream and kind",
            Family::<UpstreamErrorLabel, Counter>::default(),
        );
        let reloads = registered(
            &mut registry,
            "config_reloads",
            "Config reloads, ok or failed",
            Family::<ResultLabel, Counter>::default(),
        );
        let config_generation = registered(
            &mut registry,
            "config_generation",
            "Configs put in force since start (0 = the first)",
            Gauge::default(),
        );
        let config_info = registered(
            &mut registry,
            "config_info",
            "Hash of the config file in force (value is always 1)",
            Family::<HashLabel, Gauge>::default(),
        );
        let channels = registered(
            &mut registry,
            "channels",
            "Channels held by this instance",
            Gauge::default(),
        );
        let buffered = registered(
            &mut registry,
            "buffered_messages",
            "Messages buffered over all channels",
            Gauge::default(),
        );
        let broker_up = registered(
            &mut registry,
            "broker_up",
            "1 when the broker is reachable",
            Gauge::default(),
        );
        let broker_errors = registered(
            &mut registry,
            "broker_errors",
            "Broker operations that failed",
            Counter::default(),
        );
        let client_errors = registered(&mut registry, "client_errors", "Requests or connections ended by the client's fault, by kind (never counted as upstream errors)", Family::<ClientErrorLabel, Counter>::default());
        let connections = registered(
            &mut registry,
            "connections",
            "Connections open now, by listener",
            Family::<ListenerLabel, Gauge>::default(),
        );
        let connection_caps = registered(&mut registry, "connection_cap_reached", "Times a listener reached its connection cap and stopped accepting until a connection ended", Family::<ListenerLabel, Counter>::default());
        let shed = registered(&mut registry, "upstream_shed", "Requests answered 503 at once because the upstream had max_in_flight requests in flight", Family::<UpstreamLabel, Counter>::default());
        let limit_refusals = registered(
            &mut registry,
            "poll_limit_refusals",
            "Polls refused (429), by the limit that refused them",
            Family::<LimitLabel, Counter>::default(),
        );
        let trims = registered(
            &mut registry,
            "memory_trims",
            "Times freed memory was handed back to the system after a peak",
            Counter::default(),
        );
        Metrics(Arc::new(Inner {
            registry,
            polls_held,
            polls_ended,
            publishes,
            delivered,
            delivery_latency,
            wakeups_missed,
            log_lines_dropped,
            proxy_requests,
            proxy_duration,
            upstream_errors,
            reloads,
            config_generation,
            config_info,
            channels,
            buffered,
            broker_up,
            broker_errors,
            client_errors,
            connections,
            connection_caps,
            shed,
            limit_refusals,
            trims,
            held_total: AtomicUsize::new(0),
            held_watch: watch::channel(0).0,
            activity: watch::channel(0).0,
        }))
    }

    /// Counts a poll on `route` as held until the guard drops.
    pub fn hold(&self, route: &str) -> HeldGuard {
        let gauge = self
            .0
            .polls_held
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .clone();
        gauge.inc();
        self.0.held_total.fetch_add(1, Ordering::SeqCst);
        self.held_moved();
        HeldGuard {
            metrics: self.clone(),
            gauge,
        }
    }

    /// Polls held right now (all routes).
    pub fn held(&self) -> usize {
        self.0.held_total.load(Ordering::SeqCst)
    }

    /// Polls held right now, as a stream of changes.
    pub fn held_changes(&self) -> watch::Receiver<usize> {
        let rx = self.0.held_watch.subscribe();
        // Pairs with the fence in `held_moved`: either a concurrent change
        // sees this receiver and sends, or the load below sees the change.
        fence(Ordering::SeqCst);
        self.sync_held_watch();
        rx
    }

    fn held_moved(&self) {
        fence(Ordering::SeqCst);
        if self.0.held_watch.receiver_count() > 0 {
            self.sync_held_watch();
        }
    }

    fn sync_held_watch(&self) {
        // Loaded under the watch's lock, so the last writer stores the latest count.
        let held = &self.0.held_total;
        self.0
            .held_watch
            .send_modify(|n| *n = held.load(Ordering::SeqCst));
    }

    pub fn poll_ended(&self, outcome: PollOutcome) {
        self.0
            .polls_ended
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// A message went out to a client; `age_secs` since it was published.
    pub fn delivered(&self, count: u64, age_secs: f64) {
        self.0.delivered.inc_by(count);
        self.0.delivery_latency.observe(age_secs.max(0.0));
    }

    /// Publishes accepted since start, as a stream of changes.
    pub fn activity(&self) -> watch::Receiver<u64> {
        self.0.activity.subscribe()
    }

    /// Messages delivered since start.
    pub fn delivered_total(&self) -> u64 {
        self.0.delivered.get()
    }

    pub fn wakeup_missed(&self) {
        self.0.wakeups_missed.inc();
    }

    pub fn published(&self, accepted: u64, rejected: u64) {
        if accepted > 0 {
            self.0.activity.send_modify(|n| *n += accepted);
            self.0
                .publishes
                .get_or_create(&ResultLabel {
                    result: ResultKind::accepted,
                })
                .inc_by(accepted);
        }
        if rejected > 0 {
            self.0
                .publishes
                .get_or_create(&ResultLabel {
                    result: ResultKind::rejected,
                })
                .inc_by(rejected);
        }
    }

    pub fn proxied(&self, route: &str, status: u16, head_secs: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.0
            .proxy_requests
            .get_or_create(&ProxyLabel {
                route: route.to_owned(),
                class,
            })
            .inc();
        self.0
            .proxy_duration
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(head_secs);
    }

    pub fn upstream_error(&self, upstream: &str, kind: &'static str) {
        self.0
            .upstream_errors
            .get_or_create(&UpstreamErrorLabel {
                upstream: upstream.to_owned(),
                kind,
            })
            .inc();
    }

    /// A config was put in force (`generation` 0 is the one at start).
    pub fn config_loaded(&self, generation: u64, hash: &str) {
        if generation > 0 {
            self.0
                .reloads
                .get_or_create(&ResultLabel {
                    result: ResultKind::ok,
                })
                .inc();
        }
        self.0
            .config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.0.config_info.clear();
        self.0
            .config_info
            .get_or_create(&HashLabel {
                hash: hash.to_owned(),
            })
            .set(1);
    }

    pub fn config_rejected(&self) {
        self.0
            .reloads
            .get_or_create(&ResultLabel {
                result: ResultKind::failed,
            })
            .inc();
    }

    pub fn broker_error(&self) {
        self.0.broker_errors.inc();
    }

    pub fn client_error(&self, kind: ClientError) {
        self.0
            .client_errors
            .get_or_create(&ClientErrorLabel { kind })
            .inc();
    }

    pub fn connection_cap_reached(&self, listener: &'static str) {
        self.0
            .connection_caps
            .get_or_create(&ListenerLabel { listener })
            .inc();
    }

    /// A request to `upstream` was shed (its `max_in_flight` was reached).
    pub fn shed(&self, upstream: &str) {
        self.0
            .shed
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_owned(),
            })
            .inc();
    }

    /// A poll was refused by `limit` ("client", "address", "channel", "total").
    pub fn limit_refused(&self, limit: &'static str) {
        self.0
            .limit_refusals
            .get_or_create(&LimitLabel { limit })
            .inc();
    }

    pub fn trimmed(&self) {
        self.0.trims.inc();
    }

    /// The Prometheus text exposition, with the figures read at scrape time.
    pub fn render(&self, now: AtScrape) -> String {
        let i = &self.0;
        i.channels
            .set(i64::try_from(now.channels).unwrap_or(i64::MAX));
        i.buffered
            .set(i64::try_from(now.buffered).unwrap_or(i64::MAX));
        i.broker_up.set(i64::from(now.broker_up));
        for (listener, open) in now.connections {
            i.connections
                .get_or_create(&ListenerLabel { listener })
                .set(i64::try_from(open).unwrap_or(i64::MAX));
        }
        // The log writer keeps its own count: brought up to it.
        let dropped = &i.log_lines_dropped;
        dropped.inc_by(now.log_lines_dropped.saturating_sub(dropped.get()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &i.registry);
        out
    }
}

/// Figures that are cheaper to read when scraped than to maintain: their
/// owners (the broker, the log writer) count them, `render` reads them.
#[derive(Debug, Clone, Copy)]
pub struct AtScrape {
    pub channels: usize,
    pub buffered: usize,
    pub broker_up: bool,
    /// The log writer's count of dropped lines so far.
    pub log_lines_dropped: u64,
    /// Connections open now, by listener (each listener's cap knows them).
    pub connections: [(&'static str, usize); 2],
}

/// Decrements the held-polls gauges on drop, whatever ended the poll.
pub struct HeldGuard {
    metrics: Metrics,
    gauge: Gauge,
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        self.metrics.0.held_total.fetch_sub(1, Ordering::SeqCst);
        self.metrics.held_moved();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_count_follows_the_guards_and_can_be_watched() {
        let m = Metrics::new();
        let a = m.hold("r");
        let rx = m.held_changes();
        assert_eq!(*rx.borrow(), 1, "a watcher starts from the current count");
        let b = m.hold("r");
        assert_eq!((m.held(), *rx.borrow()), (2, 2));
        drop((a, b));
        assert_eq!((m.held(), *rx.borrow()), (0, 0));
        drop(rx);
        let _c = m.hold("r");
        assert_eq!(m.held(), 1);
        assert_eq!(
            *m.held_changes().borrow(),
            1,
            "moves with no watcher are not lost"
        );
    }
}
