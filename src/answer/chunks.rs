//! An answer whose body is written as it comes (a GRIP stream): chunks sent
//! by a task through a bounded channel, each counted in the connection's
//! [`SendQueue`] from when it is sent until the connection takes it, so a
//! client that stops reading a stream is found by the same stall watch as
//! one that stops reading any answer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::queue::SendQueue;

/// The writing end. Dropping it ends the body.
pub struct ChunkSender {
    tx: mpsc::Sender<Bytes>,
    /// The body's end too: a writer that gives up on its client frees
    /// what it had queued (the body may never be polled again: HTTP/2
    /// holds a stream without window as long as its connection lives).
    rx: Arc<Mutex<mpsc::Receiver<Bytes>>>,
    queue: Option<Arc<SendQueue>>,
}

/// A reserved place in the body's queue.
pub struct ChunkSlot<'a> {
    permit: mpsc::Permit<'a, Bytes>,
    queue: Option<&'a SendQueue>,
}

impl ChunkSlot<'_> {
    /// Queues the chunk. Counted in only now: a slot dropped unused (a
    /// send cancelled while it waited) leaves nothing counted behind.
    pub fn send(self, chunk: Bytes) {
        if let Some(q) = self.queue {
            q.add(chunk.len());
        }
        self.permit.send(chunk);
    }
}

/// The body: the chunks, in order, as the connection takes them.
pub struct Chunks {
    rx: Arc<Mutex<mpsc::Receiver<Bytes>>>,
    queue: Option<Arc<SendQueue>>,
}

/// The body was dropped (the client went away, or its connection closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyGone;

/// A body fed by its sender, at most `capacity` chunks waiting.
pub fn chunks(capacity: usize, queue: Option<Arc<SendQueue>>) -> (ChunkSender, Chunks) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let rx = Arc::new(Mutex::new(rx));
    (
        ChunkSender {
            tx,
            rx: rx.clone(),
            queue: queue.clone(),
        },
        Chunks { rx, queue },
    )
}

impl ChunkSender {
    /// Queues a chunk, waiting while `capacity` are waiting already.
    ///
    /// # Errors
    /// [`BodyGone`] when the body has been dropped.
    pub async fn send(&self, chunk: Bytes) -> Result<(), BodyGone> {
        self.reserve().await?.send(chunk);
        Ok(())
    }

    /// A place for the next chunk, waiting while `capacity` are waiting:
    /// for a sender that renders a chunk only once it can go.
    ///
    /// # Errors
    /// [`BodyGone`] when the body has been dropped.
    pub async fn reserve(&self) -> Result<ChunkSlot<'_>, BodyGone> {
        let permit = self.tx.reserve().await.map_err(|_| BodyGone)?;
        Ok(ChunkSlot {
            permit,
            queue: self.queue.as_deref(),
        })
    }

    /// The writer gives up on a client that takes nothing: what it queued
    /// is freed and stops counting on the connection (see
    /// [`SendQueue::abandon`]); the body ends where it is.
    pub fn abandon(&self) {
        if let Some(q) = &self.queue {
            q.abandon();
        }
        drain(&self.rx, self.queue.as_deref());
    }

    /// Resolves when the body has been dropped.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.lock().poll_recv(cx).map(|chunk| {
            chunk.map(|c| {
                if let Some(q) = &self.queue {
                    q.take(c.len());
                }
                Ok(Frame::data(c))
            })
        })
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // What was sent and never taken leaves the queue with the body.
        drain(&self.rx, self.queue.as_deref());
    }
}

/// Closes the body's channel and frees what waits in it.
fn drain(rx: &Mutex<mpsc::Receiver<Bytes>>, queue: Option<&SendQueue>) {
    let mut rx = rx.lock();
    rx.close();
    while let Ok(c) = rx.try_recv() {
        if let Some(q) = queue {
            q.leave(c.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn chunks_are_counted_until_taken_or_dropped() {
        let q = Arc::new(SendQueue::new(1 << 20));
        let (tx, mut body) = chunks(4, Some(q.clone()));
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        tx.send(Bytes::from_static(b"de")).await.unwrap();
        assert_eq!(q.queued(), 5);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!((&first[..], q.queued()), (&b"abc"[..], 2));
        drop(body);
        assert_eq!(q.queued(), 0);
        assert_eq!(tx.send(Bytes::from_static(b"x")).await, Err(BodyGone));
        assert_eq!(q.queued(), 0);
        tx.closed().await;
    }

    #[tokio::test]
    async fn a_writer_that_gives_up_frees_what_it_queued_and_the_body_ends() {
        let q = Arc::new(SendQueue::new(1 << 20));
        let (tx, mut body) = chunks(4, Some(q.clone()));
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        tx.abandon();
        assert_eq!(q.queued(), 0);
        assert!(body.frame().await.is_none(), "ended where it was");
        assert_eq!(tx.send(Bytes::from_static(b"x")).await, Err(BodyGone));
    }
}
