//! Holding a request on GRIP channels: its place under the limits, where
//! each channel's hold starts (`prev-id` against the buffer), and the
//! response hold's wait. Stream holds are handed to `stream` once started.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::select_all;
use http::Response;
use tokio::time::Instant;

use super::instruct::{Hold, Mode};
use super::item::{Delivery, Item};
use super::{respond, stream, Action, GripContext};
use crate::answer::{self as h, Body};
use crate::broker::{BufferConfig, ChannelName, Cursor, Message, Subscription, Timestamp};
use crate::defaults::GRIP_PREV_ID_WINDOW;
use crate::metrics::{GripMode, GripOutcome, HeldGuard, Metrics};
use crate::poll::{address_key, Limits, Permit, PollError};

/// How a hold went.
pub enum Ran {
    /// Held, then answered (or a stream started).
    Answered(Response<Body>),
    /// Not held: refused by a limit.
    Refused(Response<Body>),
    /// Ask the app again, with these `Grip-Last` values; items up to
    /// `after` (a hint) are behind the new answer.
    AskAgain {
        last: Vec<(ChannelName, String)>,
        after: Option<Timestamp>,
    },
}

/// One client request's holds, across the times the app is asked.
pub struct Request {
    /// The broker's clock when the app was first asked: an item published
    /// after it may be one the app's answer does not cover.
    pub asked_at: Timestamp,
    pub addr: IpAddr,
    pub may_retry: bool,
    /// When the first hold began: every hold of this request ends by its
    /// timeout counted from there (asking again never extends it).
    pub held_since: Option<Instant>,
}

/// A hold's place under the limits and in the held gauge. The gauge's
/// share is the last field: it drops after the permit (see `poll::Ticket`).
pub struct Slot {
    _permit: Permit,
    _held: HeldGuard,
}

/// Counts a hold's outcome once, when it ends, whatever ends it (a dropped
/// future is a client that went away).
pub struct Outcome {
    metrics: Metrics,
    mode: GripMode,
    outcome: GripOutcome,
}

impl Outcome {
    pub fn new(metrics: &Metrics, mode: GripMode) -> Outcome {
        Outcome {
            metrics: metrics.clone(),
            mode,
            outcome: GripOutcome::client_gone,
        }
    }

    pub fn set(&mut self, outcome: GripOutcome) {
        self.outcome = outcome;
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.metrics.grip_ended(self.mode, self.outcome);
        // The access log has the request; this line says how its hold went.
        tracing::debug!(
            target: "pollgate::grip",
            mode = ?self.mode,
            outcome = ?self.outcome,
            "GRIP hold ended"
        );
    }
}

/// Holds the request as `hold` says.
pub async fn run(hold: Hold, request: &mut Request, cx: &GripContext<'_>) -> Ran {
    let mode = match hold.mode {
        Mode::Response => GripMode::response,
        Mode::Stream => GripMode::stream,
    };
    let metrics = &cx.services.metrics;
    // Limits first: a refused request costs no buffer reads.
    let slot = match admit(&hold.channels[0].name, request.addr, cx) {
        Ok(slot) => slot,
        Err(e) => {
            Outcome::new(metrics, mode).set(GripOutcome::rejected_limit);
            if let PollError::Limit(limit) = &e {
                metrics.limit_refused(limit.label());
            }
            return Ran::Refused(h::error_response(&e));
        }
    };
    let buffer = cx.config.buffer;
    let subs: Vec<Subscription> = hold
        .channels
        .iter()
        .map(|c| cx.services.broker.subscribe(&c.name, buffer))
        .collect();
    let mut cursors = Vec::with_capacity(subs.len());
    let mut behind = false;
    for (channel, sub) in hold.channels.iter().zip(&subs) {
        let start = match &channel.prev_id {
            None => Start::At(request.asked_at),
            // Boxed: once, before the hold, which should not carry its size.
            Some(prev) => Box::pin(start_after(sub, prev, request.asked_at, buffer, metrics)).await,
        };
        match start {
            Start::At(ts) => cursors.push(Cursor::After(ts)),
            Start::Behind => {
                behind = true;
                cursors.push(Cursor::After(request.asked_at));
            }
        }
    }
    if behind && request.may_retry {
        Outcome::new(metrics, mode).set(GripOutcome::retry);
        return Ran::AskAgain {
            last: last_ids(&hold),
            after: None,
        };
    }
    match hold.mode {
        Mode::Stream => Ran::Answered(stream::start(hold, subs, cursors, slot, cx)),
        Mode::Response => {
            let since = *request.held_since.get_or_insert_with(Instant::now);
            wait(hold, subs, cursors, slot, since, request.may_retry, cx).await
        }
    }
}

/// Where a channel's hold starts.
enum Start {
    /// After this timestamp.
    At(Timestamp),
    /// The channel has items with ids, and the buffer cannot place the
    /// app's `prev-id` among them: the app must answer again.
    Behind,
}

/// Finds `prev` among the channel's buffered items. Found: hold after it
/// (newer items go out at once, from the buffer, without asking the app
/// again: better than Pushpin, which must). Not found: if the channel has
/// items with ids, the app's answer is behind them (Pushpin's retry). A
/// channel with no ids yet (new, or expired) starts when the app was asked.
async fn start_after(
    sub: &Subscription,
    prev: &str,
    asked_at: Timestamp,
    buffer: BufferConfig,
    metrics: &Metrics,
) -> Start {
    // The newest few first: a client that keeps up names one of them (the
    // whole buffer per request cost a client request 400 comparisons at
    // 20 items/s on a channel); then the rest.
    let mut any_id = false;
    for window in [GRIP_PREV_ID_WINDOW, buffer.max_size] {
        let read = match sub
            .read(Cursor::Newest, window, buffer, Timestamp::now())
            .await
        {
            Ok(read) => read,
            Err(_) => {
                // Cannot check: hold from when the app was asked (the
                // broker wakes every waiter once it is back).
                metrics.broker_error();
                return Start::At(asked_at);
            }
        };
        for m in read.messages.iter().rev() {
            if let Delivery::Grip(item) = Item::of(m) {
                match item.id.as_deref() {
                    Some(id) if id == prev => return Start::At(m.timestamp),
                    Some(_) => any_id = true,
                    None => {}
                }
            }
        }
        if read.messages.len() < window {
            break;
        }
    }
    if any_id {
        Start::Behind
    } else {
        Start::At(asked_at)
    }
}

/// `Grip-Last` for every channel with a `prev-id`: the last id the app's
/// answer covered (what Pushpin sends).
fn last_ids(hold: &Hold) -> Vec<(ChannelName, String)> {
    hold.channels
        .iter()
        .filter_map(|c| c.prev_id.clone().map(|p| (c.name.clone(), p)))
        .collect()
}

/// A held GRIP request counts under the poll limits (total, its first
/// channel, and its address), not the per-client one: GRIP apps send no
/// client id.
fn admit(channel: &ChannelName, addr: IpAddr, cx: &GripContext<'_>) -> Result<Slot, PollError> {
    let limits = Limits {
        max_per_client: usize::MAX,
        ..cx.config.limits
    };
    let key = address_key(addr);
    let permit = cx
        .services
        .admission
        .admit(format!("grip {key}"), key, channel, limits)?;
    Ok(Slot {
        _permit: permit,
        _held: cx.services.metrics.hold(cx.route),
    })
}

/// The hold's timeout: what the app asked, within the route's bounds.
fn timeout(hold: &Hold, cx: &GripContext<'_>) -> Duration {
    hold.timeout
        .map_or(cx.grip.default_timeout, Duration::from_secs)
        .max(cx.grip.min_timeout)
        .min(cx.config.poll.max_timeout)
}

/// What the channels have after their cursors.
pub struct Next {
    /// The oldest message across the channels, and its channel's index.
    pub message: Option<(usize, Arc<Message>)>,
    /// Bit `i`: channel `i`'s cursor is older than its buffer (messages
    /// may have been missed; for a cursor that is not a message's own
    /// timestamp, it may also just predate the channel).
    pub gaps: u64,
}

/// The next message after the cursors, oldest first across the channels.
pub async fn next(
    subs: &[Subscription],
    cursors: &[Cursor],
    buffer: BufferConfig,
    metrics: &Metrics,
) -> Next {
    let now = Timestamp::now();
    let mut found = Next {
        message: None,
        gaps: 0,
    };
    for (i, (sub, cursor)) in subs.iter().zip(cursors).enumerate() {
        match sub.read(*cursor, 1, buffer, now).await {
            Ok(read) => {
                if read.gap && i < 64 {
                    found.gaps |= 1 << i;
                }
                if let Some(m) = read.messages.into_iter().next() {
                    let older = |(_, n): &(usize, Arc<Message>)| m.timestamp < n.timestamp;
                    if found.message.as_ref().is_none_or(older) {
                        found.message = Some((i, m));
                    }
                }
            }
            Err(_) => metrics.broker_error(),
        }
    }
    found
}

/// Resolves when any of the channels may have news.
pub async fn changed(subs: &mut [Subscription]) {
    match subs {
        [one] => one.changed().await,
        many => {
            select_all(many.iter_mut().map(|s| Box::pin(s.changed()))).await;
        }
    }
}

/// A response hold: the first item for it, or the app's answer at the timeout.
async fn wait(
    hold: Hold,
    mut subs: Vec<Subscription>,
    mut cursors: Vec<Cursor>,
    _slot: Slot,
    since: Instant,
    may_retry: bool,
    cx: &GripContext<'_>,
) -> Ran {
    let services = cx.services;
    let mut outcome = Outcome::new(&services.metrics, GripMode::response);
    let deadline = tokio::time::sleep_until(
        since
            .checked_add(timeout(&hold, cx))
            .unwrap_or_else(Instant::now),
    );
    tokio::pin!(deadline);
    let ended = loop {
        // A gap on a response hold loses nothing the client could still
        // have: the oldest message the buffer has goes out.
        let found = next(&subs, &cursors, cx.config.buffer, &services.metrics).await;
        if let Some((i, m)) = found.message {
            cursors[i] = Cursor::After(m.timestamp);
            let age = Timestamp::now().0.saturating_sub(m.timestamp.0) as f64 / 1e6;
            match Item::of(&m) {
                Delivery::Native => {
                    outcome.set(GripOutcome::message);
                    services.metrics.delivered(1, age);
                    let queue = cx.queue.cloned();
                    let answer = h::json_pieces(http::StatusCode::OK, [m.single.clone()], queue);
                    return Ran::Answered(answer);
                }
                Delivery::Grip(item) => match &item.response {
                    Some(r) if r.action == Action::Send => {
                        outcome.set(GripOutcome::message);
                        services.metrics.delivered(1, age);
                        let base = Some(&hold.response.headers);
                        return Ran::Answered(respond(r, base, cx.queue));
                    }
                    Some(r) if r.action == Action::Hint && may_retry => {
                        outcome.set(GripOutcome::retry);
                        let mut last = last_ids(&hold);
                        if let Some(id) = &item.id {
                            last.retain(|(c, _)| c != &hold.channels[i].name);
                            last.push((hold.channels[i].name.clone(), id.clone()));
                        }
                        return Ran::AskAgain {
                            last,
                            after: Some(m.timestamp),
                        };
                    }
                    // Not for a response hold (a stream chunk, a close).
                    _ => continue,
                },
            }
        }
        tokio::select! {
            biased;
            _ = changed(&mut subs) => continue,
            _ = &mut deadline => break GripOutcome::timeout,
            _ = services.shutdown.cancelled() => break GripOutcome::shutdown,
        }
    };
    outcome.set(ended);
    Ran::Answered(respond(&hold.response, None, cx.queue))
}
