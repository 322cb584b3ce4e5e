//! Counters, gauges and histograms that the handlers move and operators
//! scrape (`GET /metrics` on the webhook listener, Prometheus text format).
//!
//! Every update is lock-free or a short read lock in `prometheus-client`'s
//! families. The count of held polls can also be watched
//! ([`Metrics::held_changes`]), so a test can await "n polls are held"
//! instead of sleeping.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

mod families;
mod history;
mod labels;

use families::Inner;
pub use history::{Reading, Sample};
pub use labels::{ClientError, GripMode, GripOutcome, PollOutcome, ResultKind, SseOutcome};
use labels::{
    ClientErrorLabel, GripLabel, HashLabel, LimitLabel, ListenerLabel, OutcomeLabel, ProxyLabel,
    ResultLabel, RouteLabel, UpstreamErrorLabel, UpstreamLabel, UpstreamRetryLabel,
};

/// Shared metrics handle; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics(Arc::new(Inner::new()))
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
        // One per answer, as the histogram counts: the two tell the same story.
        self.0.latency_counts.observe(1, age_secs.max(0.0));
    }

    /// The status page's sampler: a sample every `STATUS_SAMPLE_EVERY`
    /// until `shutdown`. `broker_up` reads the broker's state.
    pub async fn sample_until(
        self,
        shutdown: tokio_util::sync::CancellationToken,
        broker_up: impl Fn() -> bool,
    ) {
        let mut tick = tokio::time::interval(crate::defaults::STATUS_SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.sample(broker_up()),
            }
        }
    }

    /// Takes one sample for the status page's charts (see `history`).
    pub fn sample(&self, broker_up: bool) {
        let reading = Reading {
            held: self.held(),
            published: *self.0.activity.borrow(),
            delivered: self.delivered_total(),
            broker_up,
        };
        self.0.history.record(
            tokio::time::Instant::now(),
            std::time::SystemTime::now(),
            reading,
            &self.0.latency_counts,
        );
    }

    /// The chart samples newer than `after` (all with 0), oldest first.
    pub fn history(&self, after: u64) -> Vec<Sample> {
        self.0.history.after(after)
    }

    /// When this process started, Unix ms (the charts' series id).
    pub fn started(&self) -> u64 {
        self.0.history.started()
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

    /// A request sent again, or on another connection than first chosen
    /// (`reason`: see `proxy::pool::Retry`).
    pub fn upstream_retry(&self, upstream: &str, reason: &'static str) {
        self.0
            .upstream_retries
            .get_or_create(&UpstreamRetryLabel {
                upstream: upstream.to_owned(),
                reason,
            })
            .inc();
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

    /// A GRIP hold ended.
    pub fn grip_ended(&self, mode: GripMode, outcome: GripOutcome) {
        self.0
            .grip_holds
            .get_or_create(&GripLabel { mode, outcome })
            .inc();
    }

    /// Counts an event stream on `route` as open until the guard drops.
    pub fn sse_opened(&self, route: &str) -> SseGuard {
        let gauge = self
            .0
            .sse_open
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .clone();
        gauge.inc();
        SseGuard(gauge)
    }

    /// Events sent, apart from `delivered`: that counts both transports,
    /// this tells how much of it streams carry.
    pub fn sse_events(&self, count: u64) {
        self.0.sse_events.inc_by(count);
    }

    /// Why a stream ended: `slow_client` is the one an operator acts on.
    pub fn sse_ended(&self, outcome: SseOutcome) {
        self.0
            .sse_ended
            .get_or_create(&labels::SseLabel { outcome })
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

/// Decrements the open-streams gauge on drop.
pub struct SseGuard(Gauge);

impl Drop for SseGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
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
