//! A send queue: the bytes of answers rendered for a connection (HTTP/1)
//! or for one HTTP/2 stream, and not yet taken by it (Envoy's buffer
//! limits).
//!
//! HTTP/1 takes one answer at a time: the connection's queue holds one
//! answer, and a connection that stops taking bytes is found by
//! [`SendQueue::stalled`] and closed. HTTP/2 multiplexes, and a client
//! grants each stream its own window: a stream that takes nothing must
//! hold only its own bound and never stop the others, so each stream has a
//! queue of its own ([`SendQueue::for_stream`]), and what renders for it
//! waits only for its room.
//!
//! Bodies count themselves in (`Frames` adds its length when built) and out
//! (as hyper, or the lean writer, takes each frame; what is left when a body
//! is dropped unsent). The counts are atomics: a body lives on the
//! connection's thread, the queue is read by the stall watch on the same one.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug)]
pub struct SendQueue {
    queued: AtomicUsize,
    limit: usize,
    /// Bumped by every frame taken: the stall watch compares it.
    taken: AtomicU64,
    /// Woken when bytes leave the queue (a poll waiting for room).
    drained: Notify,
    /// Woken when the queue goes from empty to not (the stall watch).
    filled: Notify,
    /// The connection has ended: nothing more is to be rendered for it.
    closed: AtomicBool,
    /// It was closed by the stall watch: its client stopped reading.
    stalled_out: AtomicBool,
    /// An HTTP/2 stream's: its connection's queue. It counts every
    /// stream's bytes too (not against its limit: a stream waits only for
    /// its own room), so its stall watch closes a connection on which
    /// nothing at all is taken; and it says when that happened.
    connection: Option<std::sync::Arc<SendQueue>>,
    /// The stream's writer gave up on it (a slow client): its bytes no
    /// longer count on the connection, which stays open for the others.
    abandoned: AtomicBool,
}

/// The connection a queue belonged to has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueClosed;

impl SendQueue {
    pub fn new(limit: usize) -> SendQueue {
        SendQueue {
            queued: AtomicUsize::new(0),
            limit,
            taken: AtomicU64::new(0),
            drained: Notify::new(),
            filled: Notify::new(),
            closed: AtomicBool::new(false),
            stalled_out: AtomicBool::new(false),
            connection: None,
            abandoned: AtomicBool::new(false),
        }
    }

    /// The connection's queue, while this stream's bytes count on it.
    fn on_connection(&self) -> Option<&SendQueue> {
        self.connection
            .as_deref()
            .filter(|_| !self.abandoned.load(Ordering::Acquire))
    }

    /// Whether the stream has been given up on.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// The stream has been given up on (its client took nothing for the
    /// write deadline): what it left waiting no longer counts on its
    /// connection, whose stall watch then sees only the other streams.
    pub fn abandon(&self) {
        if let Some(c) = self.on_connection() {
            if !self.abandoned.swap(true, Ordering::AcqRel) {
                c.leave(self.queued());
            }
        }
        // Whatever waits for room in it learns it has none, ever.
        self.close();
    }

    /// The queue of one HTTP/2 stream on the connection whose queue is
    /// `connection`.
    pub fn for_stream(connection: &std::sync::Arc<SendQueue>, limit: usize) -> SendQueue {
        SendQueue {
            connection: Some(connection.clone()),
            ..SendQueue::new(limit)
        }
    }

    /// The stall watch is closing the connection: what was waiting on it
    /// ends as the client's fault (an event stream counts a slow client).
    pub fn mark_stalled(&self) {
        self.stalled_out.store(true, Ordering::Release);
    }

    /// Whether the connection was closed for not reading.
    pub fn was_stalled(&self) -> bool {
        self.stalled_out.load(Ordering::Acquire)
            || self.connection.as_ref().is_some_and(|c| c.was_stalled())
    }

    /// The connection has ended: requests still waiting for room learn it
    /// (and render nothing for a connection that is gone).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.drained.notify_waiters();
    }

    /// Bytes rendered and not yet taken.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether the next answer should wait for [`SendQueue::room`] (a
    /// closed queue never has room).
    pub fn is_full(&self) -> bool {
        self.queued() >= self.limit || self.closed.load(Ordering::Acquire)
    }

    /// An answer of `n` bytes was rendered for this connection.
    pub(super) fn add(&self, n: usize) {
        if let Some(c) = self.on_connection() {
            c.add(n);
        }
        if self.queued.fetch_add(n, Ordering::AcqRel) == 0 && n > 0 {
            self.filled.notify_one();
        }
    }

    /// The connection took `n` bytes (a frame).
    pub(super) fn take(&self, n: usize) {
        if let Some(c) = self.on_connection() {
            c.taken.fetch_add(1, Ordering::AcqRel);
        }
        self.taken.fetch_add(1, Ordering::AcqRel);
        self.leave(n);
    }

    /// `n` bytes leave without being taken (the body was dropped).
    pub(super) fn leave(&self, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(c) = self.on_connection() {
            c.leave(n);
        }
        let before = self.queued.fetch_sub(n, Ordering::AcqRel);
        // Waiters care only about the queue dropping under its limit: one
        // wakeup then, not one per frame taken.
        if before >= self.limit && before - n < self.limit {
            self.drained.notify_waiters();
        }
    }

    /// Resolves once the queue is under its limit: the moment to render
    /// the next answer.
    ///
    /// # Errors
    /// [`QueueClosed`] when the connection ends first.
    pub async fn room(&self) -> Result<(), QueueClosed> {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return Err(QueueClosed);
            }
            if !self.is_full() {
                return Ok(());
            }
            drained.await;
        }
    }

    /// Resolves when bytes have been waiting and none was taken for
    /// `timeout`: the connection has stopped reading (or, on HTTP/2, stopped
    /// granting window). Pending for ever while the queue moves or is empty.
    pub async fn stalled(&self, timeout: Duration) {
        loop {
            if self.queued() == 0 {
                self.filled.notified().await;
                continue;
            }
            let before = self.taken.load(Ordering::Acquire);
            tokio::time::sleep(timeout).await;
            if self.queued() > 0 && self.taken.load(Ordering::Acquire) == before {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_waits_for_room_and_a_still_one_is_stalled() {
        let q = std::sync::Arc::new(SendQueue::new(100));
        q.add(150);
        let room = tokio::spawn({
            let q = q.clone();
            async move { q.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!room.is_finished(), "over the limit: no room");
        q.take(60);
        room.await.unwrap().unwrap();

        // 90 bytes wait and nothing is taken: stalled after the timeout.
        let waited = tokio::time::Instant::now();
        q.stalled(Duration::from_secs(30)).await;
        assert!(waited.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_moving_queue_is_not_stalled() {
        let q = std::sync::Arc::new(SendQueue::new(100));
        q.add(1_000);
        let mover = tokio::spawn({
            let q = q.clone();
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    q.take(100);
                }
            }
        });
        let stalled =
            tokio::time::timeout(Duration::from_secs(190), q.stalled(Duration::from_secs(30)));
        assert!(stalled.await.is_err(), "a frame every 20 s is progress");
        mover.await.unwrap();
        assert_eq!(q.queued(), 0);
        let idle =
            tokio::time::timeout(Duration::from_secs(300), q.stalled(Duration::from_secs(30)));
        assert!(idle.await.is_err(), "an empty queue is not stalled");
    }

    #[tokio::test]
    async fn a_closed_queue_has_no_room_for_anyone() {
        let q = std::sync::Arc::new(SendQueue::new(100));
        q.add(150);
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.room().await }
        });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiting.await.unwrap(), Err(QueueClosed));
        q.leave(150);
        assert!(q.is_full(), "empty, but its connection is gone");
    }
}
