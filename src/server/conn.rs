//! One hyper connection's state, shared by its requests and its serving
//! task: the send queue, whether a first request came, how many are in
//! flight, and how fast the client cancels them. A watchdog task waits on
//! the deadlines this exposes and tells the serving task to drop the
//! connection when one passes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ConnSettings;
use crate::answer::{Body, BoxError, SendQueue};
use crate::defaults::H2_MAX_RESETS_PER_SEC;
use crate::metrics::ClientError;

pub(super) struct ConnState {
    queue: Arc<SendQueue>,
    /// HTTP/2: each open stream's own queue (see `answer::queue`), so that
    /// the streams that take nothing can be given up on one by one.
    streams: Mutex<Vec<std::sync::Weak<SendQueue>>>,
    /// A request has arrived on this connection.
    started: AtomicBool,
    started_tx: Notify,
    /// Requests in flight now, and started so far.
    active: AtomicUsize,
    started_count: AtomicU64,
    /// Requests cancelled by the client in the current one-second window.
    resets: Mutex<(Instant, u32)>,
    /// Woken when the client cancels too fast.
    abusive: Notify,
}

impl ConnState {
    pub(super) fn new(queue_limit: usize) -> ConnState {
        ConnState {
            queue: Arc::new(SendQueue::new(queue_limit)),
            streams: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            started_tx: Notify::new(),
            active: AtomicUsize::new(0),
            started_count: AtomicU64::new(0),
            resets: Mutex::new((Instant::now(), 0)),
            abusive: Notify::new(),
        }
    }

    pub(super) fn queue(&self) -> &Arc<SendQueue> {
        &self.queue
    }

    /// A queue for a new HTTP/2 stream of this connection.
    pub(super) fn stream_queue(&self, limit: usize) -> Arc<SendQueue> {
        let q = Arc::new(SendQueue::for_stream(&self.queue, limit));
        let mut streams = self.streams.lock();
        streams.retain(|s| s.strong_count() > 0);
        streams.push(Arc::downgrade(&q));
        q
    }

    /// HTTP/2, nothing taken on the whole connection for the write
    /// deadline: gives up on each stream with bytes waiting (an event or
    /// GRIP stream then ends as a slow client's), and says how many. The
    /// connection stays open for its other streams; `None` when it has
    /// none (HTTP/1: the connection itself is stalled).
    fn abandon_waiting_streams(&self) -> Option<usize> {
        let streams = self.streams.lock();
        if streams.is_empty() {
            return None;
        }
        let mut given_up = 0;
        for q in streams.iter().filter_map(std::sync::Weak::upgrade) {
            if q.queued() > 0 && !q.is_abandoned() {
                q.mark_stalled();
                q.abandon();
                given_up += 1;
            }
        }
        Some(given_up)
    }

    /// A request arrived; it is in flight until the returned guard drops
    /// (with its answer's body), and cancelled by the client if that
    /// happens before it [`Request::responded`].
    pub(super) fn request(self: &Arc<Self>) -> Request {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.started_count.fetch_add(1, Ordering::AcqRel);
        if !self.started.swap(true, Ordering::AcqRel) {
            self.started_tx.notify_waiters();
        }
        Request {
            state: self.clone(),
            responded: false,
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

    /// Resolves when the connection has had no request in flight for at
    /// least `timeout` (at most twice that): an idle HTTP/2 connection
    /// (HTTP/1's idle keep-alive is the head timeout's). Sampled, so that a
    /// request's start and end cost two atomic operations, no wakeup.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        let mut quiet_since: Option<u64> = None;
        loop {
            tokio::time::sleep(timeout).await;
            let started = self.started_count.load(Ordering::Acquire);
            let idle = self.active.load(Ordering::Acquire) == 0;
            match quiet_since {
                // Idle at the last look, and no request came since.
                Some(then) if idle && then == started => return,
                _ => quiet_since = idle.then_some(started),
            }
        }
    }

    fn ended(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
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

/// One request in flight, until dropped. Kept by the answer's body, so a
/// long download counts as in flight to its end. Dropped before
/// [`Request::responded`], it was cancelled by the client (an HTTP/2
/// RST_STREAM, or the connection closed).
pub(super) struct Request {
    state: Arc<ConnState>,
    responded: bool,
}

impl Request {
    /// The handler has produced the answer's head.
    pub(super) fn responded(&mut self) {
        self.responded = true;
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.state.ended();
        if !self.responded {
            self.state.cancelled();
        }
    }
}

/// Watches one connection's deadlines; says through `cut` why it must end
/// (`None`: idle, no fault), or ends when the connection does.
pub(super) async fn watchdog(
    state: Arc<ConnState>,
    settings: ConnSettings,
    metrics: crate::metrics::Metrics,
    mut cut: tokio::sync::oneshot::Sender<Option<ClientError>>,
) {
    let fault = loop {
        break tokio::select! {
            _ = cut.closed() => return,
            _ = state.no_request_within(settings.header_timeout) => Some(ClientError::no_request),
            _ = state.queue().stalled(settings.write_timeout) => {
                if let Some(streams) = state.abandon_waiting_streams() {
                    for _ in 0..streams {
                        metrics.client_error(ClientError::stream_write_timeout);
                    }
                    continue;
                }
                state.queue().mark_stalled();
                Some(ClientError::write_timeout)
            }
            _ = state.rapid_reset() => Some(ClientError::rapid_reset),
            // Idle: HTTP/2 with no stream open for the write deadline (long
            // enough for the tail of the last answer, still in HTTP/2's
            // buffers, to drain); hyper's head timeout ends an idle HTTP/1
            // connection first. Not a fault.
            _ = state.idle_for(settings.write_timeout) => None,
        };
    };
    let _ = cut.send(fault);
}

/// An answer's body with its request's place among those in flight.
pub(super) struct InFlight {
    pub(super) body: Body,
    pub(super) _request: Request,
}

impl http_body::Body for InFlight {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
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
        state.request().responded();
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
        state.request().responded();
        let flagged = tokio::time::timeout(Duration::from_millis(1), state.rapid_reset());
        assert!(flagged.await.is_err(), "answered requests do not count");
        drop(state.request());
        state.rapid_reset().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_nothing_in_flight_is_idle_after_the_timeout() {
        let state = Arc::new(ConnState::new(1024));
        let mut held = state.request();
        let idle = tokio::time::timeout(
            Duration::from_secs(60),
            state.idle_for(Duration::from_secs(10)),
        );
        assert!(idle.await.is_err(), "a request in flight: never idle");
        let since = Instant::now();
        let watch = tokio::spawn({
            let state = state.clone();
            async move { state.idle_for(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        held.responded();
        drop(held);
        watch.await.unwrap();
        let idle = since.elapsed() - Duration::from_secs(3);
        assert!(
            idle >= Duration::from_secs(10) && idle <= Duration::from_secs(20),
            "idle at least the timeout after the last answer, at most twice: {idle:?}"
        );
    }
}
