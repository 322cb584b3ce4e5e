//! An answer's body as a list of shared pieces, handed out in frames.
//!
//! A poll answer is made of the buffered messages' own bytes (a batch is
//! `prefix, data, ",", data, …, suffix`). Copying them into one buffer per
//! answer cost a copy of every batch per waiter, and on HTTP/2 held that
//! copy for as long as the client's window stayed shut. Here the pieces are
//! refcounts; each frame is a slice of a large piece (no copy) or small
//! pieces joined up to `ANSWER_FRAME_BYTES`. A connection's [`SendQueue`]
//! counts the body in when it is built and out as frames are taken.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::queue::SendQueue;
use crate::defaults::ANSWER_FRAME_BYTES;

/// A body of known length, made of shared pieces.
pub struct Frames {
    /// The piece being handed out, then the others: a one-piece answer (a
    /// single message, nearly every poll) allocates no list.
    first: Bytes,
    pieces: VecDeque<Bytes>,
    remaining: usize,
    queue: Option<Arc<SendQueue>>,
}

impl Frames {
    /// `queue`: the connection's send queue, when it has one.
    pub fn new(pieces: impl IntoIterator<Item = Bytes>, queue: Option<Arc<SendQueue>>) -> Frames {
        let mut pieces = pieces.into_iter().filter(|p| !p.is_empty());
        let first = pieces.next().unwrap_or_default();
        let pieces: VecDeque<Bytes> = pieces.collect();
        let remaining = first.len() + pieces.iter().map(Bytes::len).sum::<usize>();
        if let Some(q) = &queue {
            q.add(remaining);
        }
        Frames {
            first,
            pieces,
            remaining,
            queue,
        }
    }

    /// The next piece to hand out.
    fn pop(&mut self) -> Option<Bytes> {
        if self.first.is_empty() {
            self.pieces.pop_front()
        } else {
            Some(std::mem::take(&mut self.first))
        }
    }

    /// The next frame: at most `ANSWER_FRAME_BYTES`, copied only when small
    /// pieces are joined.
    fn next_frame(&mut self) -> Option<Bytes> {
        let first = self.pop()?;
        if first.len() >= ANSWER_FRAME_BYTES {
            let mut first = first;
            let frame = first.split_to(ANSWER_FRAME_BYTES);
            self.first = first;
            return Some(frame);
        }
        let next_fits = self
            .pieces
            .front()
            .is_some_and(|p| first.len() + p.len() <= ANSWER_FRAME_BYTES);
        if !next_fits {
            return Some(first);
        }
        let mut joined = BytesMut::with_capacity(ANSWER_FRAME_BYTES.min(self.remaining));
        joined.extend_from_slice(&first);
        while let Some(p) = self.pieces.front() {
            if joined.len() + p.len() > ANSWER_FRAME_BYTES {
                break;
            }
            joined.extend_from_slice(p);
            self.pieces.pop_front();
        }
        Some(joined.freeze())
    }
}

impl HttpBody for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(frame) = self.next_frame() else {
            return Poll::Ready(None);
        };
        self.remaining -= frame.len();
        if let Some(q) = &self.queue {
            q.take(frame.len());
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining as u64)
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        if let Some(q) = &self.queue {
            q.leave(self.remaining);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn frames(body: Frames) -> Vec<Bytes> {
        let mut body = body;
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.push(f.unwrap().into_data().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn large_pieces_are_sliced_and_small_ones_joined() {
        let big = Bytes::from(vec![b'x'; ANSWER_FRAME_BYTES * 2 + 10]);
        let small = Bytes::from_static(b"ab");
        let pieces = [small.clone(), small.clone(), big.clone(), small.clone()];
        let got = frames(Frames::new(pieces, None)).await;
        let lens: Vec<usize> = got.iter().map(Bytes::len).collect();
        assert_eq!(lens, [4, ANSWER_FRAME_BYTES, ANSWER_FRAME_BYTES, 12]);
        assert_eq!(got.concat(), [&b"abab"[..], &big, b"ab"].concat());
    }

    #[tokio::test]
    async fn the_queue_counts_a_body_in_and_out() {
        let q = Arc::new(SendQueue::new(1 << 20));
        let body = Frames::new([Bytes::from(vec![0; 40_000])], Some(q.clone()));
        assert_eq!(q.queued(), 40_000);
        assert_eq!(body.size_hint().exact(), Some(40_000));
        let mut body = body;
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(q.queued(), 40_000 - first.len());
        drop(body);
        assert_eq!(q.queued(), 0, "what was never taken leaves with the body");
    }
}
