//! Stream holds: the app's answer goes out at once, then each item's
//! `http-stream` content is appended until an item closes the stream,
//! `grip.stream_max` passes, pollgate shuts down, or the client goes.
//!
//! The stream is a task of its own feeding the response body through a
//! bounded queue: a client that stops reading stops the task at the queue,
//! and the write deadline closes the connection, which ends the task.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body as HttpBody, Frame};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::hold::{changed, next, Outcome, Slot};
use super::instruct::{Hold, KeepAlive};
use super::item::{Delivery, Item};
use super::{Action, GripContext};
use crate::answer::{self as h, Body};
use crate::broker::{BufferConfig, Cursor, Subscription, Timestamp};
use crate::defaults::GRIP_STREAM_QUEUE;
use crate::metrics::{GripMode, GripOutcome, Metrics};

/// Starts the stream and returns its response (head now, body as it comes).
pub fn start(
    hold: Hold,
    subs: Vec<Subscription>,
    cursors: Vec<Cursor>,
    slot: Slot,
    cx: &GripContext<'_>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(GRIP_STREAM_QUEUE);
    let spec = hold.response;
    let first = spec.body.clone();
    let stream = Stream {
        subs,
        cursors,
        keep_alive: hold.keep_alive,
        buffer: cx.config.buffer,
        metrics: cx.services.metrics.clone(),
        shutdown: cx.services.shutdown.clone(),
        until: Instant::now() + cx.grip.stream_max,
        tx,
        _slot: slot,
    };
    tokio::spawn(stream.run());
    let mut resp = Response::new(h::stream(Chunks {
        first: Some(first).filter(|f| !f.is_empty()),
        rx,
    }));
    *resp.status_mut() = spec.status;
    *resp.headers_mut() = spec.headers;
    if let Some(reason) = spec.reason {
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
            resp.extensions_mut().insert(phrase);
        }
    }
    resp
}

struct Stream {
    subs: Vec<Subscription>,
    cursors: Vec<Cursor>,
    keep_alive: Option<KeepAlive>,
    buffer: BufferConfig,
    metrics: Metrics,
    shutdown: tokio_util::sync::CancellationToken,
    until: Instant,
    tx: mpsc::Sender<Bytes>,
    /// Dropped when the stream ends: frees its place under the limits.
    _slot: Slot,
}

impl Stream {
    async fn run(mut self) {
        let mut outcome = Outcome::new(&self.metrics, GripMode::stream);
        let mut last_sent = Instant::now();
        let ended = 'stream: loop {
            // Everything that is there, in order, before waiting again.
            while let Some((i, m)) =
                next(&self.subs, &self.cursors, self.buffer, &self.metrics).await
            {
                self.cursors[i] = Cursor::After(m.timestamp);
                let (content, close) = match Item::of(&m) {
                    Delivery::Native => {
                        // A native message: its data, one JSON object per line.
                        let mut line = Vec::with_capacity(m.data.len() + 1);
                        line.extend_from_slice(&m.data);
                        line.push(b'\n');
                        (Bytes::from(line), false)
                    }
                    Delivery::Grip(item) => match &item.stream {
                        Some(s) => (s.content.clone(), s.action == Action::Close),
                        None => continue,
                    },
                };
                if !content.is_empty() {
                    let age = Timestamp::now().0.saturating_sub(m.timestamp.0) as f64 / 1e6;
                    if self.send(content).await.is_err() {
                        break 'stream GripOutcome::client_gone;
                    }
                    self.metrics.delivered(1, age);
                    last_sent = Instant::now();
                }
                if close {
                    break 'stream GripOutcome::closed;
                }
            }
            let beat = self.keep_alive.as_ref().map(|k| {
                if k.interval {
                    last_sent.max(Instant::now() - k.every) + k.every
                } else {
                    last_sent + k.every
                }
            });
            let beat_at = beat.unwrap_or(self.until);
            tokio::select! {
                biased;
                _ = changed(&mut self.subs) => continue,
                _ = self.tx.closed() => break GripOutcome::client_gone,
                _ = self.shutdown.cancelled() => break GripOutcome::shutdown,
                _ = sleep_until(self.until) => break GripOutcome::max_duration,
                _ = sleep_until(beat_at), if beat.is_some() => {
                    let data = self.keep_alive.as_ref().map(|k| k.data.clone()).unwrap_or_default();
                    if self.send(data).await.is_err() {
                        break GripOutcome::client_gone;
                    }
                    last_sent = Instant::now();
                }
            }
        };
        outcome.set(ended);
    }

    /// Queues a chunk; waits while the client is behind, until it leaves,
    /// shutdown, or the stream's end.
    async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        tokio::select! {
            sent = self.tx.send(chunk) => sent.map_err(|_| ()),
            _ = self.shutdown.cancelled() => Err(()),
            _ = sleep_until(self.until) => Err(()),
        }
    }
}

/// The response body: the app's first body, then the queue's chunks.
struct Chunks {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
}

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}
