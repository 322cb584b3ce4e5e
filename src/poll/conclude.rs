//! How a poll ends: a delivery, or an answer without a message (timeout,
//! gap, shutdown) whose cursor loses nothing; and the count of each outcome.

use bytes::Bytes;
use http::{Response, StatusCode};

use super::{render, PollContext, PollParams};
use crate::answer::{self as h, Body};
use crate::broker::{ChannelName, Cursor, Mark, Read, Subscription, Timestamp};
use crate::metrics::{Metrics, PollOutcome};

/// Why a poll is being answered without a message in hand.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Its deadline passed.
    Deadline,
    Shutdown,
    /// Its cursor is older than the history, and nothing is left to send.
    Gap,
}

/// Answers a poll that has no message to deliver yet: a last look (a
/// message found now goes out; after the deadline, that means its wakeup
/// never came, which is made visible), then a timeout whose cursor passes
/// over no message the poll has not read (one published between the read
/// and the mark is read instead). Boxed by its callers: it runs once per
/// poll, and a held poll should not carry its size.
pub(super) async fn conclude(
    sub: &Subscription,
    channel: &ChannelName,
    cursor: Cursor,
    params: &PollParams,
    cx: &PollContext<'_>,
    outcome: &mut OutcomeGuard<'_>,
    end: Ending,
) -> Response<Body> {
    let buffer = cx.config.buffer;
    for attempt in 0..MARK_TRIES {
        let now = Timestamp::now();
        let Ok(read) = sub.read(cursor, params.max.unwrap_or(1), buffer, now).await else {
            break;
        };
        if !read.messages.is_empty() {
            if attempt == 0 && end == Ending::Deadline {
                cx.services.metrics.wakeup_missed();
                tracing::warn!(channel = %channel, "held poll was not woken for an accepted message");
            }
            outcome.set(if read.gap {
                PollOutcome::gap
            } else {
                PollOutcome::message
            });
            return deliver(&read, params.max.is_some(), cx, now);
        }
        let gap = read.gap || end == Ending::Gap;
        let floor = read.seen.max(fallback(cursor));
        if let Mark::At(mark) = sub.timeout_mark(floor, fallback(cursor), buffer).await {
            outcome.set(if gap {
                PollOutcome::gap
            } else {
                PollOutcome::timeout
            });
            return answer(render::timeout(mark, gap));
        }
    }
    // The broker could not be read, or messages kept landing between read
    // and mark: the client's own cursor is lossless (it asks again).
    outcome.set(PollOutcome::timeout);
    answer(render::timeout(fallback(cursor), end == Ending::Gap))
}

/// Reads before a timeout answer gives up on a mark of the channel's own and
/// hands the client its cursor back.
const MARK_TRIES: usize = 3;

/// The cursor a timeout hands back when the broker cannot be asked: the
/// client's own, so it simply polls again from where it was.
fn fallback(cursor: Cursor) -> Timestamp {
    match cursor {
        Cursor::After(t) => t,
        Cursor::Oldest | Cursor::AfterId(_) | Cursor::Newest => Timestamp(0),
    }
}

pub(super) fn deliver(
    read: &Read,
    batch: bool,
    cx: &PollContext<'_>,
    now: Timestamp,
) -> Response<Body> {
    let Some(first) = read.messages.first() else {
        // Not reached (only reads with messages are delivered); an empty
        // batch says nothing and moves no cursor, so nothing could be lost.
        return h::json_pieces(StatusCode::OK, render::batch(&[], read.gap), None);
    };
    let queue = cx.queue.cloned();
    let (resp, count) = if batch {
        let sent = render::fitting(&read.messages, cx.config.poll.max_batch_bytes);
        let pieces = render::batch(sent, read.gap);
        (h::json_pieces(StatusCode::OK, pieces, queue), sent.len())
    } else {
        // An array, not a list: a single message is one piece, no allocation.
        let pieces = render::single(first, read.gap);
        (h::json_pieces(StatusCode::OK, pieces, queue), 1)
    };
    let age = now.0.saturating_sub(first.timestamp.0);
    cx.services
        .metrics
        .delivered(count as u64, age as f64 / 1e6);
    resp
}

fn answer(body: Bytes) -> Response<Body> {
    h::json(StatusCode::OK, body)
}

/// Records how a poll ended; a poll dropped before answering is a client
/// that went away.
pub(super) struct OutcomeGuard<'a> {
    metrics: &'a Metrics,
    outcome: Option<PollOutcome>,
}

impl<'a> OutcomeGuard<'a> {
    pub(super) fn new(metrics: &'a Metrics) -> Self {
        OutcomeGuard {
            metrics,
            outcome: None,
        }
    }

    pub(super) fn set(&mut self, outcome: PollOutcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for OutcomeGuard<'_> {
    fn drop(&mut self) {
        self.metrics
            .poll_ended(self.outcome.unwrap_or(PollOutcome::client_gone));
    }
}
