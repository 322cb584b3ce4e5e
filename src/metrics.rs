//! Counters and gauges that the handlers move and operators (and tests) read.
//!
//! Every field is updated lock-free. Held polls are also published through a
//! `watch`, so a test can await "n polls are held" instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// How a poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    Message,
    Timeout,
    Gap,
    Rejected,
    ClientGone,
    Error,
}

#[derive(Debug, Default)]
struct Counters {
    polls_message: AtomicU64,
    polls_timeout: AtomicU64,
    polls_gap: AtomicU64,
    polls_rejected: AtomicU64,
    polls_client_gone: AtomicU64,
    polls_error: AtomicU64,
    publishes_accepted: AtomicU64,
    publishes_rejected: AtomicU64,
}

/// Shared metrics handle; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    counters: Arc<Counters>,
    held: Arc<watch::Sender<usize>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counters: Arc::default(),
            held: Arc::new(watch::channel(0).0),
        }
    }
}

impl Metrics {
    /// Counts a poll as held until the guard drops.
    pub fn hold(&self) -> HeldGuard {
        self.held.send_modify(|n| *n += 1);
        HeldGuard {
            held: self.held.clone(),
        }
    }

    /// Polls held right now, as a stream of changes.
    pub fn held(&self) -> watch::Receiver<usize> {
        self.held.subscribe()
    }

    pub fn poll_ended(&self, outcome: PollOutcome) {
        let c = &self.counters;
        let counter = match outcome {
            PollOutcome::Message => &c.polls_message,
            PollOutcome::Timeout => &c.polls_timeout,
            PollOutcome::Gap => &c.polls_gap,
            PollOutcome::Rejected => &c.polls_rejected,
            PollOutcome::ClientGone => &c.polls_client_gone,
            PollOutcome::Error => &c.polls_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn published(&self, accepted: u64, rejected: u64) {
        self.counters
            .publishes_accepted
            .fetch_add(accepted, Ordering::Relaxed);
        self.counters
            .publishes_rejected
            .fetch_add(rejected, Ordering::Relaxed);
    }
}

/// Decrements the held-polls gauge on drop, whatever ended the poll.
pub struct HeldGuard {
    held: Arc<watch::Sender<usize>>,
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.held.send_modify(|n| *n = n.saturating_sub(1));
    }
}
