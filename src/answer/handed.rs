//! A body that renders its next frame only when asked (an HTTP/1 event
//! stream) counts the frame it handed over in the connection's send queue
//! until it is asked again. hyper asks again once it has buffered the frame
//! (its write buffer is capped) and the lean writer once it has written it,
//! so when the client stops reading the connection stops asking, the last
//! frame stays counted, and the queue's stall watch (or the lean writer's
//! write deadline) closes the connection as it would any stalled answer.

use std::sync::Arc;

use tokio::time::Instant;

use super::queue::SendQueue;

/// The frame a body handed over and the connection has not yet moved on from.
#[derive(Debug, Default)]
pub struct Handed {
    queue: Option<Arc<SendQueue>>,
    bytes: usize,
    at: Option<Instant>,
}

impl Handed {
    pub fn new(queue: Option<Arc<SendQueue>>) -> Handed {
        Handed {
            queue,
            bytes: 0,
            at: None,
        }
    }

    /// Counts the frame being handed over (the previous one was taken).
    pub fn hand(&mut self, len: usize, now: Instant) {
        self.taken();
        if let Some(q) = &self.queue {
            q.add(len);
        }
        self.bytes = len;
        self.at = Some(now);
    }

    /// The connection asked for the next frame: the last one has moved on.
    pub fn taken(&mut self) {
        if self.at.take().is_none() {
            return;
        }
        if let Some(q) = &self.queue {
            q.take(self.bytes);
        }
        self.bytes = 0;
    }

    /// How long the last frame has waited for the connection to move on.
    pub fn waiting(&self) -> Option<std::time::Duration> {
        self.at.map(|at| at.elapsed())
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        if let Some(q) = &self.queue {
            q.leave(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_frame_is_counted_until_the_next_is_asked_for() {
        let q = Arc::new(SendQueue::new(100));
        let mut h = Handed::new(Some(q.clone()));
        h.hand(60, Instant::now());
        assert_eq!(q.queued(), 60);
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        assert_eq!(h.waiting(), Some(std::time::Duration::from_secs(3)));
        h.hand(70, Instant::now());
        assert_eq!(q.queued(), 70, "the previous one was taken");
        h.taken();
        assert_eq!((q.queued(), h.waiting()), (0, None));
        h.hand(5, Instant::now());
        drop(h);
        assert_eq!(q.queued(), 0, "what was never taken leaves with the body");
    }
}
