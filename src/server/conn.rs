//! One hyper connection's state, shared by its requests and its serving
//! task: the send queue, whether a first request came, and how fast the
//! client cancels requests. The serving task selects on the deadlines this
//! exposes and drops the connection when one passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::answer::SendQueue;
use crate::defaults::H2_MAX_RESETS_PER_SEC;

pub(super) struct ConnState {
    queue: Arc<SendQueue>,
    /// A request has arrived on this connection.
    started: AtomicBool,
    started_tx: Notify,
    /// Requests cancelled by the client in the current one-second window.
    resets: Mutex<(Instant, u32)>,
    /// Woken when the client cancels too fast.
    abusive: Notify,
}

impl ConnState {
    pub(super) fn new(queue_limit: usize) -> ConnState {
        ConnState {
            queue: Arc::new(SendQueue::new(queue_limit)),
            started: AtomicBool::new(false),
            started_tx: Notify::new(),
            resets: Mutex::new((Instant::now(), 0)),
            abusive: Notify::new(),
        }
    }

    pub(super) fn queue(&self) -> &Arc<SendQueue> {
        &self.queue
    }

    /// A request arrived; the returned guard counts it as cancelled unless
    /// it is `answered`.
    pub(super) fn request(self: &Arc<Self>) -> Request {
        if !self.started.swap(true, Ordering::AcqRel) {
            self.started_tx.notify_waiters();
        }
        Request {
            state: Some(self.clone()),
        }
    }

    /// Resolves when no request has arrived within `timeout` of the call
    /// (made when the connection starts); pending for ever once one has.
    pub(super) async fn no_request_within(&self, timeout: Duration) {
        let started = self.started_tx.notified();
        tokio::pin!(started);
        started.as_mut().enable();
        if self.started.load(Ordering::Acquire)
            || tokio::time::timeout(timeout, started).await.is_ok()
        {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when the client has cancelled more than
    /// `H2_MAX_RESETS_PER_SEC` requests within a second.
    pub(super) async fn rapid_reset(&self) {
        self.abusive.notified().await;
    }

    fn cancelled(&self) {
        let now = Instant::now();
        let mut window = self.resets.lock();
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        if window.1 > H2_MAX_RESETS_PER_SEC {
            self.abusive.notify_one();
        }
    }
}

/// One request in flight; dropped before [`Request::answered`], it was
/// cancelled by the client (an HTTP/2 RST_STREAM, or the connection closed).
pub(super) struct Request {
    state: Option<Arc<ConnState>>,
}

impl Request {
    pub(super) fn answered(mut self) {
        self.state = None;
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            state.cancelled();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_late_after_the_timeout() {
        let state = Arc::new(ConnState::new(1024));
        let late = Instant::now();
        state.no_request_within(Duration::from_secs(10)).await;
        assert_eq!(late.elapsed(), Duration::from_secs(10));

        let state = Arc::new(ConnState::new(1024));
        state.request().answered();
        let waited = tokio::time::timeout(
            Duration::from_secs(60),
            state.no_request_within(Duration::from_secs(10)),
        );
        assert!(waited.await.is_err(), "a request came: never late");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_faster_than_the_limit_is_flagged() {
        let state = Arc::new(ConnState::new(1024));
        for _ in 0..H2_MAX_RESETS_PER_SEC {
            drop(state.request());
        }
        let flagged = tokio::time::timeout(Duration::from_millis(1), state.rapid_reset());
        assert!(flagged.await.is_err(), "at the limit: allowed");
        // A second later the window starts again.
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..H2_MAX_RESETS_PER_SEC {
            drop(state.request());
        }
        state.request().answered();
        let flagged = tokio::time::timeout(Duration::from_millis(1), state.rapid_reset());
        assert!(flagged.await.is_err(), "answered requests do not count");
        drop(state.request());
        state.rapid_reset().await;
    }
}
