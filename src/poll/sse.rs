//! Server-Sent Events on a poll route: a `GET` that accepts
//! `text/event-stream` gets the channel as a stream of events, on the same
//! cursor a long poll uses (an event's `id:` is its message's `timestamp`),
//! so a client can move between the two without losing or repeating one.
//!
//! A client that reads slowly holds little in pollgate: its backlog stays
//! in the channel buffer (shared with everyone) and is read by cursor, a
//! chunk of at most `SSE_CHUNK_BYTES` at a time, only when the connection's
//! send queue has room. How the stream is driven depends on the transport:
//!
//! - HTTP/1.1 (one stream per connection): the stream is the response body
//!   itself, no task. It reads the broker when the connection asks for its
//!   next chunk, and the chunk it handed over counts in the connection's
//!   send queue until then: a connection that moves nothing for
//!   `server.write_timeout` is closed by the stall watch (hyper) or the
//!   lean writer's write deadline, and the stream counted as `slow_client`.
//! - HTTP/2: hyper polls a stream's body only while the stream has window,
//!   so a client could park one stream (and its slot under the limits, its
//!   deadlines) while other streams keep the connection busy. There the
//!   stream runs as a task feeding the body through a queue of
//!   `SSE_QUEUE` chunks; a chunk that cannot be queued within
//!   `server.write_timeout` ends the stream (`slow_client`), and the task's
//!   own deadlines end it on time whether or not the client reads.
//!
//! Either way the client reconnects with its `Last-Event-ID` and catches up
//! from the buffer.

pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, FutureExt};
use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use std::pin::Pin;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{authorize, params, Permit, PollContext, PollError, Ticket};
use crate::answer::{self as h, Body, ChunkSender, Handed, SendQueue};
use crate::broker::{BufferConfig, Cursor, Subscription, Timestamp};
use crate::defaults::{
    SSE_CHUNK_BYTES, SSE_CHUNK_BYTES_H2, SSE_END_SPREAD, SSE_QUEUE, SSE_READ_BATCH, SSE_RETRY,
    SSE_RETRY_SPREAD,
};
use crate::metrics::{Metrics, SseGuard, SseOutcome};
use crate::routes::PollRoute;

/// The start point a reconnecting `EventSource` names: `Last-Event-ID`, an
/// id this stream sent (a timestamp cursor). Empty is "none" (what a
/// browser sends before any event had an id).
pub(super) fn last_event_id(headers: &HeaderMap) -> Result<Option<Cursor>, params::ParamError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("\u{0}").trim();
    if text.is_empty() {
        return Ok(None);
    }
    params::since(text)
        .map(Some)
        .ok_or(params::ParamError::Query {
            name: "Last-Event-ID",
            reason: "must be an event id this stream sent (a timestamp)",
        })
}

/// How a stream is driven (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drive {
    /// By the connection asking for the next chunk (HTTP/1.1).
    Body,
    /// By a task of its own (HTTP/2).
    Task,
}

/// Opens the stream for an admitted request: asks the app first if the
/// route says so, subscribes, and answers with the stream's head at once.
pub(super) async fn open(
    mut ticket: Ticket,
    drive: Drive,
    route: &PollRoute,
    cx: &PollContext<'_>,
) -> Result<Response<Body>, PollError> {
    if let Some(headers) = ticket.authorize.take() {
        authorize(&ticket, &headers, route, cx).await?;
    }
    let buffer = cx.config.buffer;
    let sub = cx
        .services
        .broker
        .subscribe(ticket.permit.channel(), buffer);
    let cursor = match ticket.params.cursor {
        Some(c) => c,
        None => Cursor::After(sub.head(buffer).await?),
    };
    let poll = &cx.config.poll;
    let now = Instant::now();
    // Validation keeps both durations within a week: no overflow.
    let until = now + poll.sse_max_duration - spread(poll.sse_max_duration / SSE_END_SPREAD);
    let queue = cx.queue.cloned();
    let stream = Sse {
        opened: false,
        caught_up: false,
        sub,
        cursor,
        buffer,
        // HTTP/2: a stream left without window keeps the chunk hyper took
        // for as long as its connection lives: small ones there.
        max_batch_bytes: poll.max_batch_bytes.min(match drive {
            Drive::Body => SSE_CHUNK_BYTES,
            Drive::Task => SSE_CHUNK_BYTES_H2,
        }),
        heartbeat: poll.sse_heartbeat,
        until,
        timer: Box::pin(tokio::time::sleep_until(
            until.min(now + poll.sse_heartbeat),
        )),
        shutdown: Box::pin(cx.services.shutdown.clone().cancelled_owned()),
        last_sent: now,
        // On HTTP/2 the task's queue counts the chunks instead.
        handed: Handed::new(if drive == Drive::Body {
            queue.clone()
        } else {
            None
        }),
        queue,
        write_timeout: cx.config.server.write_timeout,
        metrics: cx.services.metrics.clone(),
        outcome: None,
        permit: Some(ticket.permit),
        _open: cx.services.metrics.sse_opened(cx.route),
    };
    let body = match drive {
        Drive::Body => h::stream(StreamBody::new(stream::unfold(
            stream,
            |mut s| async move {
                let chunk = s.next().await?;
                Some((Ok::<_, std::convert::Infallible>(Frame::data(chunk)), s))
            },
        ))),
        Drive::Task => {
            let (tx, body) = h::chunks(SSE_QUEUE, cx.queue.cloned());
            tokio::spawn(stream.pump(tx));
            h::stream(body)
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx passes the stream through unbuffered whatever `proxy_buffering`
    // says (unless told to ignore this header).
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// Somewhere in `[0, d)`, differing between streams opened at different
/// microseconds: streams opened together end (and clients ended together
/// come back) apart.
fn spread(d: Duration) -> Duration {
    let micros = u128::from(Timestamp::now().0) % d.as_micros().max(1);
    Duration::from_micros(u64::try_from(micros).unwrap_or_default())
}

/// One open stream: its place under the limits, its subscription, its
/// cursor, and one timer for the next heartbeat or the end.
struct Sse {
    /// The last read sent everything the channel had (see `next`).
    caught_up: bool,
    /// Whether the first chunk went out (rendered when asked for, not
    /// kept in the stream).
    opened: bool,
    sub: Subscription,
    cursor: Cursor,
    buffer: BufferConfig,
    /// Per chunk: `poll.max_batch_bytes`, at most `SSE_CHUNK_BYTES`.
    max_batch_bytes: usize,
    heartbeat: Duration,
    until: Instant,
    /// Fires when the next heartbeat may be due or at `until`, whichever is
    /// first. One timer, reset at most once per heartbeat interval.
    timer: Pin<Box<Sleep>>,
    /// One registration with the shutdown token for the stream's life.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// When the last chunk went out: a heartbeat is due `heartbeat` after it.
    last_sent: Instant,
    handed: Handed,
    /// The connection's send queue: nothing is read while it is full.
    queue: Option<Arc<SendQueue>>,
    write_timeout: Duration,
    metrics: Metrics,
    outcome: Option<SseOutcome>,
    /// Freed first when the stream ends (see `Drop`).
    permit: Option<Permit>,
    /// The open-streams gauge: the last field, so it falls only once the
    /// slot is free and the outcome counted.
    _open: SseGuard,
}

impl Sse {
    /// The next chunk, or `None` when the stream ends (cleanly: the client
    /// reconnects with its `Last-Event-ID`).
    async fn next(&mut self) -> Option<Bytes> {
        // Asked again: the connection has moved the last chunk on.
        self.handed.taken();
        if !self.opened {
            self.opened = true;
            let retry = SSE_RETRY + spread(SSE_RETRY_SPREAD);
            return Some(self.hand(wire::opening(retry, self.cursor)));
        }
        // Just woken by the select below, which looked at shutdown and the
        // end first (biased): no need to look again (each look at the
        // shutdown token takes its lock: measured, 4 % of a fan-out).
        let mut woken = false;
        loop {
            // Checked before a read that does not follow a wait: a stream
            // that always finds something (a backlog, a busy channel) ends.
            if !woken {
                if self.shutdown.as_mut().now_or_never().is_some() {
                    return self.end(SseOutcome::shutdown);
                }
                if Instant::now() >= self.until {
                    return self.end(SseOutcome::max_duration);
                }
            }
            let after_wait = std::mem::take(&mut woken);
            if let Some(queue) = self.queue.as_ref().filter(|q| q.is_full()) {
                // Other answers on this connection wait to be taken: add
                // nothing to them (the connection's bound holds).
                tokio::select! {
                    biased;
                    _ = self.shutdown.as_mut() => return self.end(SseOutcome::shutdown),
                    room = queue.room() => if room.is_err() {
                        // The connection ended (closed for not reading, or
                        // the client left).
                        let gone = self.gone();
                        return self.end(gone);
                    },
                    _ = tokio::time::sleep_until(self.until) => {}
                }
                continue;
            }
            // Asked again after a chunk, with everything read and nothing
            // announced since: straight to waiting (a fan-out's every
            // delivery would otherwise read the buffer once for nothing).
            let idle = !after_wait && self.caught_up && !self.sub.has_changed();
            if !idle {
                if let Some(chunk) = self.read().await {
                    return Some(self.hand(chunk));
                }
            }
            tokio::select! {
                biased;
                _ = self.shutdown.as_mut() => return self.end(SseOutcome::shutdown),
                _ = self.timer.as_mut() => {
                    let now = Instant::now();
                    if now >= self.until {
                        return self.end(SseOutcome::max_duration);
                    }
                    let due = self.last_sent + self.heartbeat;
                    let beat = now >= due;
                    let next = if beat { now + self.heartbeat } else { due };
                    self.timer.as_mut().reset(next.min(self.until));
                    if beat {
                        return Some(self.hand(Bytes::from_static(wire::HEARTBEAT)));
                    }
                }
                _ = self.sub.changed() => {
                    // Announced: read, even if a wait for room comes first
                    // (the announcement is spent once `changed` returns).
                    woken = true;
                    self.caught_up = false;
                }
            }
        }
    }

    /// HTTP/2: runs the stream into its body's queue until it ends, the
    /// client goes, or the client takes nothing for the write deadline
    /// (then what it had queued is freed: hyper may hold the body for as
    /// long as the connection lives).
    async fn pump(mut self, tx: ChunkSender) {
        self.pump_into(&tx).await;
        if self.outcome == Some(SseOutcome::slow_client) {
            tx.abandon();
        }
    }

    async fn pump_into(&mut self, tx: &ChunkSender) {
        loop {
            // A place in the queue first: a chunk is read only once it can
            // go, so at most `SSE_QUEUE` chunks wait for this stream.
            // Nearly always free at once: a deadline only for a real wait.
            let slot = match tx.reserve().now_or_never() {
                Some(slot) => slot,
                None => tokio::select! {
                    biased;
                    slot = tx.reserve() => slot,
                    _ = self.shutdown.as_mut() => return self.set(SseOutcome::shutdown),
                    _ = tokio::time::sleep(self.write_timeout) => {
                        return self.set(SseOutcome::slow_client);
                    }
                },
            };
            let Ok(slot) = slot else {
                return self.set(self.gone());
            };
            let chunk = tokio::select! {
                biased;
                chunk = self.next() => chunk,
                // Idle: the client may be gone long before the next beat.
                _ = tx.closed() => return self.set(self.gone()),
            };
            let Some(chunk) = chunk else { return };
            slot.send(chunk);
        }
    }

    /// What the buffer has after the cursor, as one chunk (within
    /// `max_batch_bytes`, at least one event); `None` when nothing.
    async fn read(&mut self) -> Option<Bytes> {
        let now = Timestamp::now();
        let read = match self
            .sub
            .read(self.cursor, SSE_READ_BATCH, self.buffer, now)
            .await
        {
            Ok(read) => read,
            Err(_) => {
                // The stream stays open: the broker wakes every waiter when
                // it is back, and the heartbeat keeps the stream alive.
                self.metrics.broker_error();
                self.caught_up = false;
                return None;
            }
        };
        if read.gap && matches!(self.cursor, Cursor::After(c) if c > read.seen) {
            // A start point from the future (see `broker::buffer`): the
            // client learns of the gap and goes on from the channel's head
            // (not `seen`, which on Redis ends the batch read); what came
            // before is the app's to resync.
            let head = match self.sub.head(self.buffer).await {
                Ok(head) => head,
                Err(_) => {
                    self.metrics.broker_error();
                    return None;
                }
            };
            self.cursor = Cursor::After(head);
            self.caught_up = false;
            return Some(wire::gap(head));
        }
        let sent = super::render::fitting(&read.messages, self.max_batch_bytes);
        // All there was, sent: the next read can wait for an announcement.
        self.caught_up =
            !read.gap && sent.len() == read.messages.len() && read.messages.len() < SSE_READ_BATCH;
        let gap = read.gap.then(|| match sent.first() {
            // Continues right before the first message still there.
            Some(first) => Timestamp(first.timestamp.0.saturating_sub(1)),
            None => read.seen,
        });
        let events = (!sent.is_empty()).then(|| wire::events(sent));
        if let Some(last) = sent.last() {
            self.cursor = Cursor::After(last.timestamp);
            let age = now.0.saturating_sub(sent[0].timestamp.0) as f64 / 1e6;
            self.metrics.delivered(sent.len() as u64, age);
            self.metrics.sse_events(sent.len() as u64);
        }
        match (gap, events) {
            (None, events) => events,
            (Some(from), None) => {
                self.cursor = Cursor::After(from);
                Some(wire::gap(from))
            }
            (Some(from), Some(events)) => Some(Bytes::from([wire::gap(from), events].concat())),
        }
    }

    fn hand(&mut self, chunk: Bytes) -> Bytes {
        // The timer is not moved per chunk: when it fires, it looks at
        // `last_sent` and waits the rest of the interval if something went.
        self.last_sent = Instant::now();
        self.handed.hand(chunk.len(), self.last_sent);
        chunk
    }

    /// Why the client is gone: cut off for not reading (the lean writer's
    /// write deadline, or the connection's stall watch), or it left.
    fn gone(&self) -> SseOutcome {
        let waited = self.handed.waiting().unwrap_or_default();
        let stalled = self.queue.as_ref().is_some_and(|q| q.was_stalled());
        if stalled || waited >= self.write_timeout {
            SseOutcome::slow_client
        } else {
            SseOutcome::client_gone
        }
    }

    fn end(&mut self, outcome: SseOutcome) -> Option<Bytes> {
        self.set(outcome);
        None
    }

    fn set(&mut self, outcome: SseOutcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        // The slot first: once the metrics say a stream ended, a client may
        // open the next one (the same order as a held poll's).
        drop(self.permit.take());
        let outcome = self.outcome.unwrap_or_else(|| {
            // Dropped mid-stream: the connection ended. A chunk it had not
            // moved on from for the write deadline means it was closed for
            // not reading.
            self.gone()
        });
        self.metrics.sse_ended(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_a_cursor_or_a_clear_error() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("last-event-id", HeaderValue::from_str(v).unwrap());
            last_event_id(&h)
        };
        assert_eq!(last_event_id(&HeaderMap::new()), Ok(None));
        assert_eq!(with(""), Ok(None));
        assert_eq!(
            with("12.000034"),
            Ok(Some(Cursor::After(Timestamp(12_000_034))))
        );
        assert_eq!(with("0.000000"), Ok(Some(Cursor::Oldest)));
        let err = with("abc").unwrap_err().to_string();
        assert!(err.contains("Last-Event-ID"), "{err}");
    }

    #[test]
    fn spread_stays_below_its_bound() {
        for _ in 0..100 {
            assert!(spread(Duration::from_secs(60)) < Duration::from_secs(60));
        }
        assert_eq!(spread(Duration::ZERO), Duration::ZERO);
    }
}
