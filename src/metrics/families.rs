//! Every metric family pollgate registers, with its name and help text.

use std::sync::atomic::AtomicUsize;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::history::{History, LatencyCounts};
use super::labels::{
    ClientErrorLabel, GripLabel, HashLabel, LimitLabel, ListenerLabel, OutcomeLabel, ProxyLabel,
    ResultLabel, RouteLabel, SseLabel, UpstreamErrorLabel, UpstreamLabel, UpstreamRetryLabel,
};

pub(super) struct Inner {
    pub(super) registry: Registry,
    pub(super) polls_held: Family<RouteLabel, Gauge>,
    pub(super) polls_ended: Family<OutcomeLabel, Counter>,
    pub(super) publishes: Family<ResultLabel, Counter>,
    pub(super) delivered: Counter,
    pub(super) delivery_latency: Histogram,
    pub(super) wakeups_missed: Counter,
    pub(super) log_lines_dropped: Counter,
    pub(super) proxy_requests: Family<ProxyLabel, Counter>,
    pub(super) proxy_duration: Family<RouteLabel, Histogram>,
    pub(super) upstream_errors: Family<UpstreamErrorLabel, Counter>,
    pub(super) upstream_retries: Family<UpstreamRetryLabel, Counter>,
    pub(super) reloads: Family<ResultLabel, Counter>,
    pub(super) config_generation: Gauge,
    pub(super) config_info: Family<HashLabel, Gauge>,
    pub(super) channels: Gauge,
    pub(super) buffered: Gauge,
    pub(super) broker_up: Gauge,
    pub(super) broker_errors: Counter,
    pub(super) client_errors: Family<ClientErrorLabel, Counter>,
    pub(super) connections: Family<ListenerLabel, Gauge>,
    pub(super) connection_caps: Family<ListenerLabel, Counter>,
    pub(super) shed: Family<UpstreamLabel, Counter>,
    pub(super) limit_refusals: Family<LimitLabel, Counter>,
    pub(super) grip_holds: Family<GripLabel, Counter>,
    pub(super) sse_open: Family<RouteLabel, Gauge>,
    pub(super) sse_events: Counter,
    pub(super) sse_ended: Family<SseLabel, Counter>,
    pub(super) trims: Counter,
    /// Polls held now, all routes. An atomic: it moves twice per poll, and a
    /// `watch` write takes nine locks (hold + drop measured 157 -> 43 ns on
    /// one thread, 1,010 -> 242 ns with two threads at it).
    pub(super) held_total: AtomicUsize,
    /// `held_total` for those who wait on it; written only while someone does.
    pub(super) held_watch: watch::Sender<usize>,
    /// Bumped by every accepted publish: the status page long-polls on it.
    pub(super) activity: watch::Sender<u64>,
    /// The status page's charts: deliveries by latency, and the sample ring.
    pub(super) latency_counts: LatencyCounts,
    pub(super) history: History,
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
    use super::history::{BUCKETS, FIRST_BOUND};
    Histogram::new(exponential_buckets(FIRST_BOUND, 2.0, BUCKETS as u16))
}

impl Inner {
    pub(super) fn new() -> Inner {
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
        let upstream_retries = registered(
            &mut registry,
            "upstream_retries",
            "Requests sent again, or on another connection than first chosen, because the app had closed a kept-alive connection; by upstream and reason (stale, unsent, replayed)",
            Family::<UpstreamRetryLabel, Counter>::default(),
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
        let connection_caps = registered(&mut registry, "connection_cap_reached", "Times a listener reached its connection cap and paused accepting (once per stay at the cap)", Family::<ListenerLabel, Counter>::default());
        let shed = registered(&mut registry, "upstream_shed", "Requests answered 503 at once because the upstream had max_in_flight requests in flight", Family::<UpstreamLabel, Counter>::default());
        let limit_refusals = registered(
            &mut registry,
            "poll_limit_refusals",
            "Polls refused (429), by the limit that refused them",
            Family::<LimitLabel, Counter>::default(),
        );
        let grip_holds = registered(
            &mut registry,
            "grip_holds",
            "GRIP holds ended, by mode (response, stream) and outcome",
            Family::<GripLabel, Counter>::default(),
        );
        let sse_open = registered(
            &mut registry,
            "sse_streams",
            "Event streams open now, by route",
            Family::<RouteLabel, Gauge>::default(),
        );
        let sse_events = registered(
            &mut registry,
            "sse_events",
            "Messages sent as events on event streams",
            Counter::default(),
        );
        let sse_ended = registered(
            &mut registry,
            "sse_streams_ended",
            "Event streams ended, by outcome (max_duration, shutdown, client_gone, slow_client)",
            Family::<SseLabel, Counter>::default(),
        );
        let trims = registered(
            &mut registry,
            "memory_trims",
            "Times freed memory was handed back to the system after a peak",
            Counter::default(),
        );
        Inner {
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
            upstream_retries,
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
            grip_holds,
            sse_open,
            sse_events,
            sse_ended,
            trims,
            held_total: AtomicUsize::new(0),
            held_watch: watch::channel(0).0,
            activity: watch::channel(0).0,
            latency_counts: LatencyCounts::new(),
            history: History::new(),
        }
    }
}
