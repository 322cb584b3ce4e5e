//! Stream holds: the app's answer goes out at once, then each item's
//! `http-stream` content is appended until an item closes the stream,
//! `grip.stream_max` passes, pollgate shuts down, or the client goes.
//!
//! The stream is a task of its own feeding the response body (a bounded
//! queue of chunks, counted in the connection's send queue, or the
//! stream's on HTTP/2): a client that stops reading stops the task at the
//! queue, and a chunk it cannot queue within `server.write_timeout` ends
//! the stream (`slow_client`; on HTTP/1 the connection's write deadline
//! closes the connection too).

use bytes::Bytes;
use http::Response;
use tokio::time::{sleep_until, Instant};

use super::hold::{changed, next, Outcome, Slot};
use super::instruct::{Hold, KeepAlive};
use super::item::{Delivery, Item};
use super::{Action, GripContext};
use crate::answer::{self as h, Body, ChunkSender};
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
    let (tx, body) = h::chunks(GRIP_STREAM_QUEUE, cx.queue.cloned());
    let spec = hold.response;
    let stream = Stream {
        subs,
        cursors,
        keep_alive: hold.keep_alive,
        buffer: cx.config.buffer,
        metrics: cx.services.metrics.clone(),
        shutdown: cx.services.shutdown.clone(),
        until: later(cx.grip.stream_max),
        write_timeout: cx.config.server.write_timeout,
        tx,
        read_any: 0,
        _slot: slot,
    };
    tokio::spawn(stream.run(spec.body.clone()));
    let mut resp = Response::new(h::stream(body));
    *resp.status_mut() = spec.status;
    *resp.headers_mut() = spec.headers;
    if let Some(reason) = spec.reason {
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
            resp.extensions_mut().insert(phrase);
        }
    }
    resp
}

/// `d` from now; a duration too large for the clock is "never".
fn later(d: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(100 * 365 * 86_400))
}

struct Stream {
    subs: Vec<Subscription>,
    cursors: Vec<Cursor>,
    keep_alive: Option<KeepAlive>,
    buffer: BufferConfig,
    metrics: Metrics,
    shutdown: tokio_util::sync::CancellationToken,
    until: Instant,
    /// The longest a chunk may wait for a place in the body's queue.
    write_timeout: std::time::Duration,
    tx: ChunkSender,
    /// Bit `i`: channel `i`'s cursor is a message's timestamp.
    read_any: u64,
    /// Dropped when the stream ends: frees its place under the limits.
    _slot: Slot,
}

impl Stream {
    async fn run(mut self, first: Bytes) {
        let mut outcome = Outcome::new(&self.metrics, GripMode::stream);
        let ended = self.serve(first).await;
        outcome.set(ended);
    }

    async fn serve(&mut self, first: Bytes) -> GripOutcome {
        if !first.is_empty() {
            if let Err(ended) = self.send(first).await {
                return ended;
            }
        }
        // When the next keep-alive is due: idle mode moves it on with every
        // chunk sent, interval mode only with each beat.
        let every = self.keep_alive.as_ref().map(|k| (k.every, k.interval));
        let mut beat = every.map(|(every, _)| later(every));
        loop {
            // Everything that is there, in order, before waiting again.
            loop {
                let found = next(&self.subs, &self.cursors, self.buffer, &self.metrics).await;
                if found.gaps & self.read_any != 0 {
                    // Items this stream should have had are gone from the
                    // buffer (it fell behind by more than the buffer): end
                    // it, so the client comes back and the app answers it
                    // afresh, rather than skip them silently. Only a cursor
                    // that is a message's own counts: one from when the app
                    // was asked may predate the channel itself.
                    return GripOutcome::gap;
                }
                let Some((i, m)) = found.message else {
                    break;
                };
                self.cursors[i] = Cursor::After(m.timestamp);
                if i < 64 {
                    self.read_any |= 1 << i;
                }
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
                    if let Err(ended) = self.send(content).await {
                        return ended;
                    }
                    self.metrics.delivered(1, age);
                    if let Some((every, false)) = every {
                        beat = Some(later(every));
                    }
                }
                if close {
                    return GripOutcome::closed;
                }
            }
            let beat_at = beat.unwrap_or(self.until);
            tokio::select! {
                biased;
                _ = changed(&mut self.subs) => {}
                _ = self.tx.closed() => return GripOutcome::client_gone,
                _ = self.shutdown.cancelled() => return GripOutcome::shutdown,
                _ = sleep_until(self.until) => return GripOutcome::max_duration,
                _ = sleep_until(beat_at), if beat.is_some() => {
                    let data = self.keep_alive.as_ref().map(|k| k.data.clone()).unwrap_or_default();
                    if let Err(ended) = self.send(data).await {
                        return ended;
                    }
                    beat = every.map(|(every, _)| later(every));
                }
            }
        }
    }

    /// Queues a chunk; waits while the client is behind, until it leaves,
    /// takes nothing for the write deadline, shutdown, or the stream's end
    /// (the error says which).
    async fn send(&self, chunk: Bytes) -> Result<(), GripOutcome> {
        tokio::select! {
            sent = self.tx.send(chunk) => sent.map_err(|_| GripOutcome::client_gone),
            _ = tokio::time::sleep(self.write_timeout) => {
                self.tx.abandon();
                Err(GripOutcome::slow_client)
            }
            _ = self.shutdown.cancelled() => Err(GripOutcome::shutdown),
            _ = sleep_until(self.until) => Err(GripOutcome::max_duration),
        }
    }
}
