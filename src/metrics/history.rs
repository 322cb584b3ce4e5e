//! The last 15 minutes, for the status page's charts: a fixed ring of
//! samples taken by one task on a timer (`STATUS_SAMPLE_EVERY`), so the page
//! costs nothing per request and memory never grows with traffic.
//!
//! Rates and latency quantiles are per sample interval, from the difference
//! between two readings of monotonic totals. The latency quantiles come from
//! pollgate's own bucket counts (the same bounds as the Prometheus
//! histogram, whose counts prometheus-client does not expose), read the way
//! PromQL's `histogram_quantile` reads them: linearly inside a bucket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

use crate::defaults::STATUS_SAMPLES;

/// Upper bounds of the latency buckets, in seconds: 0.5 ms doubling to
/// ~16 s, then everything above. The Prometheus histograms use the same
/// (`families::latency_histogram`).
pub(super) const BUCKETS: usize = 16;
pub(super) const FIRST_BOUND: f64 = 0.0005;

fn bound(i: usize) -> f64 {
    FIRST_BOUND * f64::from(1u32 << i)
}

/// Deliveries by latency bucket, since start. One relaxed add per answer.
pub(super) struct LatencyCounts([AtomicU64; BUCKETS + 1]);

impl LatencyCounts {
    pub(super) fn new() -> Self {
        LatencyCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    pub(super) fn observe(&self, count: u64, secs: f64) {
        let i = (0..BUCKETS).find(|&i| secs <= bound(i)).unwrap_or(BUCKETS);
        self.0[i].fetch_add(count, Ordering::Relaxed);
    }

    fn read(&self) -> [u64; BUCKETS + 1] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// The `q` quantile (0..1) of what `counts` holds, in milliseconds; `None`
/// when it holds nothing.
fn quantile(counts: &[u64; BUCKETS + 1], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let low = if i == 0 { 0.0 } else { bound(i - 1) };
            // Above the last bound there is no upper edge: say the bound.
            let Some(high) = (i < BUCKETS).then(|| bound(i)) else {
                return Some(low * 1000.0);
            };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some((low + (high - low) * within) * 1000.0);
        }
        below += n;
    }
    None
}

/// What the sampler reads each tick: monotonic totals and the figures of
/// the moment.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub held: usize,
    pub published: u64,
    pub delivered: u64,
    pub broker_up: bool,
}

/// One point of every chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Increases by one per sample: `/status/history?after=SEQ` asks for
    /// newer ones only.
    pub seq: u64,
    /// When it was taken, Unix milliseconds.
    pub at: u64,
    /// Polls and event streams held at that moment.
    pub held: usize,
    /// Publishes accepted per second over the interval.
    pub publishes: f64,
    /// Messages delivered per second over the interval.
    pub deliveries: f64,
    /// Publishes accepted and messages delivered since start, at that moment.
    pub published: u64,
    pub delivered: u64,
    /// Delivery latency quantiles over the interval, in ms (`null` when
    /// nothing was delivered).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub broker_up: bool,
}

struct Previous {
    /// Intervals are measured on the monotonic clock: a wall clock stepped
    /// back by NTP would make a two-second interval read as a millisecond.
    at: Instant,
    published: u64,
    delivered: u64,
    latency: [u64; BUCKETS + 1],
}

struct Ring {
    /// When this process started, Unix ms: a page that sees it change knows
    /// pollgate restarted and its samples are a new series.
    started: u64,
    samples: VecDeque<Sample>,
    next_seq: u64,
    previous: Option<Previous>,
}

/// The ring; its one writer is the sampler task.
pub(super) struct History(Mutex<Ring>);

impl History {
    pub(super) fn new() -> Self {
        History(Mutex::new(Ring {
            started: unix_ms(SystemTime::now()),
            samples: VecDeque::with_capacity(STATUS_SAMPLES),
            next_seq: 1,
            previous: None,
        }))
    }

    /// Takes one sample: `now` measures the interval, `wall` labels it. The
    /// first one only sets the baseline: a rate needs two readings.
    pub(super) fn record(
        &self,
        now: Instant,
        wall: SystemTime,
        reading: Reading,
        latency: &LatencyCounts,
    ) {
        let counts = latency.read();
        let mut ring = self.0.lock();
        let current = Previous {
            at: now,
            published: reading.published,
            delivered: reading.delivered,
            latency: counts,
        };
        let Some(previous) = ring.previous.replace(current) else {
            return;
        };
        let secs = now.duration_since(previous.at).as_secs_f64().max(0.001);
        let interval: [u64; BUCKETS + 1] =
            std::array::from_fn(|i| counts[i].saturating_sub(previous.latency[i]));
        let sample = Sample {
            seq: ring.next_seq,
            at: unix_ms(wall),
            held: reading.held,
            publishes: reading.published.saturating_sub(previous.published) as f64 / secs,
            deliveries: reading.delivered.saturating_sub(previous.delivered) as f64 / secs,
            published: reading.published,
            delivered: reading.delivered,
            p50_ms: quantile(&interval, 0.5),
            p99_ms: quantile(&interval, 0.99),
            broker_up: reading.broker_up,
        };
        ring.next_seq += 1;
        if ring.samples.len() == STATUS_SAMPLES {
            ring.samples.pop_front();
        }
        ring.samples.push_back(sample);
    }

    /// When this process started, Unix ms.
    pub(super) fn started(&self) -> u64 {
        self.0.lock().started
    }

    /// The samples newer than `after` (all with 0), oldest first. A
    /// sequence this ring has not reached comes from before a restart: the
    /// asker gets everything, and starts over.
    pub(super) fn after(&self, after: u64) -> Vec<Sample> {
        let ring = self.0.lock();
        let after = if after >= ring.next_seq { 0 } else { after };
        let newer = ring.samples.partition_point(|s| s.seq <= after);
        ring.samples.range(newer..).cloned().collect()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn reading(published: u64, delivered: u64) -> Reading {
        Reading {
            held: 3,
            published,
            delivered,
            broker_up: true,
        }
    }

    #[test]
    fn a_sample_holds_the_rates_and_quantiles_of_its_interval() {
        let history = History::new();
        let latency = LatencyCounts::new();
        let (t0, w0) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_000));
        latency.observe(1_000, 0.0001);
        history.record(t0, w0, reading(10, 10), &latency);
        assert!(
            history.after(0).is_empty(),
            "the first reading is a baseline"
        );
        // 99 deliveries at ~1 ms, one at ~1 s, over 2 seconds.
        latency.observe(99, 0.0008);
        latency.observe(1, 0.9);
        history.record(
            t0 + Duration::from_secs(2),
            w0 + Duration::from_secs(2),
            reading(30, 110),
            &latency,
        );
        let s = &history.after(0)[0];
        assert_eq!((s.seq, s.held, s.at), (1, 3, 1_002_000));
        assert_eq!((s.publishes, s.deliveries), (10.0, 50.0));
        let p50 = s.p50_ms.unwrap();
        assert!((0.5..=1.0).contains(&p50), "{p50}");
        let p99 = s.p99_ms.unwrap();
        assert!(
            (0.5..=1.0).contains(&p99),
            "{p99}: the 99th of 100 is still fast"
        );
        // Earlier deliveries (the 1,000 before the baseline) do not count.
        // The wall clock is stepped back meanwhile: the interval is still
        // the 2 s that passed, not a millisecond.
        history.record(
            t0 + Duration::from_secs(4),
            UNIX_EPOCH,
            reading(40, 110),
            &latency,
        );
        let quiet = &history.after(1)[0];
        assert_eq!(
            (quiet.seq, quiet.p50_ms, quiet.deliveries, quiet.publishes),
            (2, None, 0.0, 5.0)
        );
    }

    #[test]
    fn the_ring_keeps_the_newest_and_answers_after_a_sequence() {
        let history = History::new();
        let latency = LatencyCounts::new();
        let t0 = Instant::now();
        for i in 0..(STATUS_SAMPLES as u64 + 11) {
            let t = Duration::from_secs(i);
            history.record(t0 + t, UNIX_EPOCH + t, reading(i, i), &latency);
        }
        let all = history.after(0);
        assert_eq!(all.len(), STATUS_SAMPLES);
        assert_eq!(all[0].seq, 11);
        assert_eq!(all.last().map(|s| s.seq), Some(STATUS_SAMPLES as u64 + 10));
        let newer = history.after(STATUS_SAMPLES as u64 + 8);
        assert_eq!(
            newer.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [STATUS_SAMPLES as u64 + 9, STATUS_SAMPLES as u64 + 10]
        );
        assert!(history.after(STATUS_SAMPLES as u64 + 10).is_empty());
        assert_eq!(
            history.after(STATUS_SAMPLES as u64 + 11).len(),
            STATUS_SAMPLES,
            "a sequence from before a restart gets everything"
        );
    }

    #[test]
    fn quantiles_read_buckets_like_histogram_quantile() {
        let mut counts = [0u64; BUCKETS + 1];
        counts[1] = 100; // (0.5 ms, 1 ms]
        assert_eq!(quantile(&counts, 0.5), Some(0.75));
        counts = [0; BUCKETS + 1];
        counts[BUCKETS] = 1; // above the last bound
        assert_eq!(quantile(&counts, 0.99), Some(bound(BUCKETS - 1) * 1000.0));
        assert_eq!(quantile(&[0; BUCKETS + 1], 0.5), None);
    }
}
