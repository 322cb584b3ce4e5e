//! What a client sends, looked at before hyper reads it: the framing
//! rules hyper does not enforce, or enforces only once it is too late.
//!
//! - HTTP/1: a request with both `Transfer-Encoding` and `Content-Length`
//!   is refused with `400` (nginx since 1.21.1, Envoy). hyper reads it by
//!   its `Transfer-Encoding` and drops the length before a handler could
//!   see it, so the request heads are followed here (`h1`), in order, and
//!   each one's verdict is queued for the handler hyper calls for it
//!   ([`Verdicts`]).
//! - HTTP/2: a frame that is an error by its header alone (a first frame
//!   that is not SETTINGS, a PING whose length is not 8...) is answered at
//!   once with GOAWAY(PROTOCOL_ERROR), as nginx does, instead of waiting
//!   for a payload the client may never send (`h2`). h2 itself sends that
//!   GOAWAY: the frame is handed to it as one it refuses on sight.
//!
//! Both follow the client's bytes as they pass, holding back at most the
//! start of an HTTP/2 frame header. Where the HTTP/1 follower meets
//! something it is not sure of (an upgrade, a head it cannot parse), it
//! stops and hyper's own rules decide alone: a request with both headers is
//! then still read by its encoding and its connection closed after it.

mod h1;
mod h2;

#[cfg(test)]
mod differential;

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, ReadBuf};

use crate::metrics::{ClientError, Metrics};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The verdicts on one HTTP/1 connection's request heads, in order: the
/// follower adds one per head it reads, the handler takes one per request
/// hyper hands it. Once the follower has stopped, the answer to the last
/// request it judged closes the connection, so hyper never serves a
/// request no verdict was given for.
#[derive(Debug, Default)]
pub(super) struct Verdicts {
    inner: Mutex<VerdictQueue>,
}

#[derive(Debug, Default)]
struct VerdictQueue {
    /// Verdicts not yet taken, oldest first: `true` is refused.
    queue: VecDeque<bool>,
    /// The follower has stopped: no verdict will come for later heads.
    stopped: bool,
}

/// What the handler is to do with the request hyper hands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Serve,
    /// Both `Transfer-Encoding` and `Content-Length`.
    Ambiguous,
    /// A head the follower never judged: it had stopped in the body of a
    /// request whose answer had already gone out.
    Unjudged,
}

impl Verdicts {
    fn push(&self, refused: bool) {
        self.inner.lock().queue.push_back(refused);
    }

    fn stop(&self) {
        self.inner.lock().stopped = true;
    }

    /// The verdict on the HTTP/1 request hyper hands the handler now.
    pub(super) fn next(&self) -> Verdict {
        let mut inner = self.inner.lock();
        match inner.queue.pop_front() {
            Some(false) => Verdict::Serve,
            Some(true) => Verdict::Ambiguous,
            None if inner.stopped => Verdict::Unjudged,
            // Not reached: the follower sees every byte before hyper does.
            None => Verdict::Serve,
        }
    }

    /// Whether the answer being sent is to the last request the follower
    /// judged before it stopped: then it closes the connection.
    pub(super) fn last_judged(&self) -> bool {
        let inner = self.inner.lock();
        inner.stopped && inner.queue.is_empty()
    }
}

/// A connection's reading side, followed.
pub(super) struct Inbound<T> {
    io: T,
    state: State,
    verdicts: Arc<Verdicts>,
    /// Where a refused HTTP/2 frame is counted (the client's fault).
    metrics: Metrics,
    /// Bytes followed and passed that a small read had no room for.
    out: Vec<u8>,
}

enum State {
    /// The first bytes: HTTP/2's preface, or not.
    Start {
        seen: usize,
    },
    H1(h1::Follower),
    H2(h2::Frames),
    /// A frame was refused: hyper has had the poison, and reads nothing
    /// more.
    Poisoned,
    /// Not followed (any more).
    Off,
}

impl<T> Inbound<T> {
    pub(super) fn new(io: T, verdicts: Arc<Verdicts>, metrics: Metrics) -> Inbound<T> {
        Inbound {
            io,
            state: State::Start { seen: 0 },
            verdicts,
            metrics,
            out: Vec::new(),
        }
    }

    /// Follows `bytes`, the new ones hyper is about to read; returns how
    /// many of them hyper may have now (the rest are held back, or
    /// dropped after a poisoned frame).
    fn follow(&mut self, bytes: &mut [u8]) -> usize {
        let mut at = 0;
        loop {
            match &mut self.state {
                State::Start { seen } => {
                    let n = (PREFACE.len() - *seen).min(bytes.len() - at);
                    if bytes[at..at + n] != PREFACE[*seen..*seen + n] {
                        // Not a preface: every byte so far is HTTP/1's,
                        // those that looked like one too.
                        let mut follower = h1::Follower::default();
                        follower.follow(&PREFACE[..*seen], &self.verdicts);
                        self.state = State::H1(follower);
                        continue;
                    }
                    *seen += n;
                    at += n;
                    if *seen < PREFACE.len() {
                        return bytes.len();
                    }
                    self.state = State::H2(h2::Frames::default());
                }
                State::H1(follower) => {
                    follower.follow(&bytes[at..], &self.verdicts);
                    if follower.stopped() {
                        self.verdicts.stop();
                        self.state = State::Off;
                    }
                    return bytes.len();
                }
                State::H2(frames) => {
                    let (pass, refused) = frames.follow(&mut bytes[at..]);
                    if refused {
                        self.metrics.client_error(ClientError::bad_frame);
                        self.state = State::Poisoned;
                    }
                    return at + pass;
                }
                State::Poisoned => return 0,
                State::Off => return bytes.len(),
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Inbound<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Bytes followed and passed that did not fit in the last read.
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if let State::Poisoned = this.state {
                // The end, as far as hyper is concerned. What the client
                // sent after the refused frame is read and dropped, so that
                // closing with it unread does not reset the connection
                // before the GOAWAY is read.
                let mut scratch = [0u8; 1024];
                loop {
                    let mut dropped = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.io).poll_read(cx, &mut dropped) {
                        Poll::Ready(Ok(())) if !dropped.filled().is_empty() => continue,
                        _ => return Poll::Ready(Ok(())),
                    }
                }
            }
            // HTTP/2: the start of a frame header held back last time.
            let held = match &mut this.state {
                State::H2(frames) => frames.take_held(),
                _ => Vec::new(),
            };
            if held.len() >= buf.remaining() {
                // A read too small for what is held and more (h2 asks for
                // a few bytes at times): through a buffer of our own.
                let mut scratch = [0u8; 256];
                let mut read = ReadBuf::new(&mut scratch);
                match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {}
                    other => {
                        if let State::H2(frames) = &mut this.state {
                            frames.hold(&held);
                        }
                        return other;
                    }
                }
                let eof = read.filled().is_empty();
                let mut bytes = held;
                bytes.extend_from_slice(read.filled());
                // At the end, what is held goes as it is (a frame cut short).
                let pass = if eof {
                    bytes.len()
                } else {
                    this.follow(&mut bytes)
                };
                bytes.truncate(pass);
                if eof && bytes.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.out = bytes;
                continue;
            }
            let start = buf.filled().len();
            buf.put_slice(&held);
            let before = buf.filled().len();
            match Pin::new(&mut this.io).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => {
                    // Nothing new: what was held stays held.
                    buf.set_filled(start);
                    if let State::H2(frames) = &mut this.state {
                        frames.hold(&held);
                    }
                    return other;
                }
            }
            if buf.filled().len() == before {
                // The client is done: what is held goes as it is, and hyper
                // sees the frame cut short.
                return Poll::Ready(Ok(()));
            }
            let end = buf.filled().len();
            let pass = this.follow(&mut buf.filled_mut()[start..end]);
            buf.set_filled(start + pass);
            if pass > 0 || matches!(this.state, State::Off | State::Poisoned) {
                return Poll::Ready(Ok(()));
            }
            // All of it held back (part of a frame header): read on.
        }
    }
}

super::io::forward_writes!(Inbound<T>, io, T);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What reads of `size` bytes at most get through [`Inbound`] from
    /// `bytes`, to the end.
    async fn read_in(bytes: &[u8], size: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(bytes).await.unwrap();
        drop(client);
        let mut inbound = Inbound::new(server, Arc::default(), Metrics::default());
        let mut out = Vec::new();
        let mut chunk = vec![0; size];
        loop {
            let n = inbound.read(&mut chunk).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }

    fn frame(length: usize, kind: u8, stream: u8) -> Vec<u8> {
        let mut b = vec![0, 0, length as u8, kind, 0, 0, 0, 0, stream];
        b.extend(std::iter::repeat_n(7, length));
        b
    }

    #[tokio::test]
    async fn http2_frames_pass_whole_whatever_the_reads_size() {
        let good = [
            PREFACE.to_vec(),
            frame(6, 0x4, 0),
            frame(8, 0x6, 0),
            frame(4, 0x8, 1),
        ]
        .concat();
        for size in [1, 2, 3, 8, 9, 10, 64] {
            assert_eq!(read_in(&good, size).await, good, "reads of {size}");
        }
    }

    #[tokio::test]
    async fn a_refused_frame_is_poisoned_whatever_the_reads_size() {
        let bad = [PREFACE.to_vec(), frame(6, 0x4, 0), frame(5, 0x3, 1)].concat();
        let expected = [PREFACE.to_vec(), frame(6, 0x4, 0), h2::POISON.to_vec()].concat();
        for size in [1, 2, 3, 8, 9, 10, 64] {
            assert_eq!(read_in(&bad, size).await, expected, "reads of {size}");
        }
    }

    #[tokio::test]
    async fn http1_passes_untouched() {
        let req =
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nok";
        for size in [1, 5, 64] {
            assert_eq!(read_in(req, size).await, req.to_vec());
        }
    }
}
