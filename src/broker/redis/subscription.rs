//! A local waiter's registration on a Redis channel, and the history its
//! channel's waiters share: one read of Redis per instance per publish,
//! whatever the number of local waiters.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use super::super::buffer::{from_the_future, Cursor, Mark, Read};
use super::super::message::{ChannelName, Message, Prepared, Timestamp};
use super::super::waiter;
use super::super::{BrokerError, BufferConfig};
use super::{RedisBroker, Slot};
use crate::defaults::{REDIS_HEAD_REUSE, REDIS_READ_BATCH, REDIS_READ_MAX};

/// History fetched from Redis, shared by a channel's local waiters.
#[derive(Default)]
pub(super) struct Cache {
    /// Every message with `from < ts <= upto` is in `messages`.
    pub(super) from: Timestamp,
    pub(super) upto: Timestamp,
    /// `upto` was the channel's head when fetched; otherwise the fetch
    /// stopped at its count and Redis holds more after `upto`.
    pub(super) complete: bool,
    pub(super) messages: VecDeque<Arc<Message>>,
    pub(super) epoch: Timestamp,
    pub(super) lost: Timestamp,
    /// The meta hash was missing when read: the history is gone.
    pub(super) fresh: bool,
    /// Redis's clock when it was read.
    pub(super) clock: Timestamp,
    pub(super) valid: bool,
    /// When it was read from Redis, and under which subscription.
    pub(super) fetched: Option<tokio::time::Instant>,
    pub(super) generation: u64,
}

/// A local waiter's registration on a channel.
pub struct Subscription {
    pub(super) broker: Arc<RedisBroker>,
    pub(super) channel: ChannelName,
    pub(super) slot: Arc<Slot>,
    pub(super) rx: Option<watch::Receiver<Timestamp>>,
}

impl Subscription {
    /// The channel's newest timestamp: where a poll without a cursor starts.
    ///
    /// Read from Redis, or from this instance's copy when that was read less
    /// than `REDIS_HEAD_REUSE` ago, under the current subscription, holds
    /// everything up to Redis's head then, and nothing newer has been
    /// announced or published here since (`wake`). The head always comes
    /// from Redis: an announcement only says when to ask again. A message
    /// published on another instance and not yet announced here is one a
    /// poll arriving at that moment may see or not, as with any race
    /// between a publish and a poll.
    pub async fn head(&self, buffer: BufferConfig) -> Result<Timestamp, BrokerError> {
        let mut cache = self.slot.cache.lock().await;
        // Read after the lock: a publish noted while this poll queued counts.
        let known = self.slot.wake.latest();
        let recent = cache
            .fetched
            .is_some_and(|at| at.elapsed() < REDIS_HEAD_REUSE);
        if recent
            && cache.valid
            && cache.complete
            && known <= cache.upto
            && cache.generation == self.broker.generation.load(Ordering::Acquire)
            && !self.slot.stale.load(Ordering::Acquire)
            && self.broker.is_ready()
        {
            return Ok(cache.upto);
        }
        // Read into a cache of its own: the shared one keeps the messages
        // the channel's other waiters read from.
        let mut head = Cache::default();
        self.fetch(&mut head, Timestamp(u64::MAX / 2), 1, buffer)
            .await?;
        let current = cache.valid
            && cache.complete
            && head.valid
            && head.upto == cache.upto
            && head.epoch == cache.epoch
            && head.lost == cache.lost;
        if current {
            // Still what Redis holds: keep its messages for the readers.
            cache.fetched = head.fetched;
            cache.generation = head.generation;
        } else {
            *cache = head;
        }
        Ok(cache.upto)
    }

    pub async fn read(
        &self,
        cursor: Cursor,
        max: usize,
        buffer: BufferConfig,
        now: Timestamp,
    ) -> Result<Read, BrokerError> {
        match cursor {
            Cursor::Oldest => Ok(self
                .read_after(Timestamp(0), max, false, buffer, now)
                .await?
                .0),
            Cursor::After(t) => {
                let (read, future) = self.read_after(t, max, true, buffer, now).await?;
                if !future {
                    return Ok(read);
                }
                // Not a cursor this history handed out: a gap, from the oldest.
                let (mut all, _) = self
                    .read_after(Timestamp(0), max, false, buffer, now)
                    .await?;
                all.gap = true;
                Ok(all)
            }
            // Not indexed from the end here: the whole history, its tail kept.
            Cursor::Newest => {
                let (mut all, _) = self
                    .read_after(Timestamp(0), usize::MAX, false, buffer, now)
                    .await?;
                let skip = all.messages.len().saturating_sub(max);
                all.messages.drain(..skip);
                Ok(all)
            }
            // Ids are not indexed in Redis: look for it in the history.
            Cursor::AfterId(id) => {
                let (all, _) = self
                    .read_after(Timestamp(0), usize::MAX, false, buffer, now)
                    .await?;
                match all.messages.iter().position(|m| m.id == id) {
                    Some(i) => Ok(Read {
                        messages: all.messages.into_iter().skip(i + 1).take(max).collect(),
                        gap: false,
                        seen: all.seen,
                    }),
                    None => Ok(Read {
                        messages: all.messages.into_iter().take(max).collect(),
                        gap: true,
                        seen: all.seen,
                    }),
                }
            }
        }
    }

    /// Messages after `after`, and whether `after` is from the future of
    /// this history (see `buffer::from_the_future`; only looked at with
    /// `check_gap`).
    async fn read_after(
        &self,
        after: Timestamp,
        max: usize,
        check_gap: bool,
        buffer: BufferConfig,
        now: Timestamp,
    ) -> Result<(Read, bool), BrokerError> {
        let mut cache = self.slot.cache.lock().await;
        // Read after the lock: a publish noted while this poll queued counts.
        let known = self.slot.wake.latest();
        // Taken under the lock, and put back unless the fetch completes: a
        // read that fails or is cancelled (an event stream's client left)
        // must not leave the next reader serving the stale cache.
        let stale = StaleFlag::take(&self.slot.stale);
        // A reader at the end of an incomplete fetch reads Redis again: what
        // follows was never announced to this instance (a catch-up of more
        // than one batch on a quiet channel would otherwise wait for the
        // next publish).
        let usable = !stale.0
            && cache.valid
            && after >= cache.from
            && known <= cache.upto
            && (cache.complete || after < cache.upto);
        if !usable {
            self.fetch(
                &mut cache,
                after,
                max.clamp(REDIS_READ_BATCH, REDIS_READ_MAX),
                buffer,
            )
            .await?;
        }
        stale.done();
        // The cache may hold messages that have aged past `max_age` since
        // it was filled: they are not served, and a cursor before one of
        // them missed it (this instance's clock; Redis's trims on its own).
        let cutoff = now.saturating_sub(buffer.max_age);
        let expired_after_cursor = cache
            .messages
            .iter()
            .any(|m| m.timestamp > after && m.timestamp < cutoff);
        let gap = check_gap
            && ((cache.fresh && after.0 > 0)
                || after < cache.epoch
                || after < cache.lost
                || expired_after_cursor);
        let messages = cache
            .messages
            .iter()
            .filter(|m| m.timestamp > after && m.timestamp >= cutoff)
            .take(max)
            .cloned()
            .collect();
        // Redis's clock now, as far as this instance can tell.
        let clock = cache
            .fetched
            .map_or(cache.clock, |at| cache.clock.saturating_add(at.elapsed()));
        let future = check_gap && from_the_future(after, cache.upto.max(clock));
        // Every message up to `upto` is in the cache: what was in view.
        Ok((
            Read {
                messages,
                gap,
                seen: cache.upto,
            },
            future,
        ))
    }

    async fn fetch(
        &self,
        cache: &mut Cache,
        after: Timestamp,
        count: usize,
        buffer: BufferConfig,
    ) -> Result<(), BrokerError> {
        // Taken before the read: a subscription that changes meanwhile
        // makes this view old at once, and its age counts from the ask, so
        // a slow answer is not reused for a full REDIS_HEAD_REUSE after.
        let generation = self.broker.generation.load(Ordering::Acquire);
        let asked = tokio::time::Instant::now();
        let (stream, meta) = self.broker.keys(&self.channel);
        let mut inv = self.broker.scripts.read.prepare_invoke();
        inv.key(&stream)
            .key(&meta)
            .arg(after.0)
            .arg(count)
            .arg(RedisBroker::ttl_secs(buffer))
            .arg(buffer.max_size)
            .arg(u64::try_from(buffer.max_age.as_micros()).unwrap_or(u64::MAX));
        let fields: Vec<Bytes> = self
            .broker
            .invoke::<Vec<Vec<u8>>>(inv)
            .await?
            .into_iter()
            .map(Bytes::from)
            .collect();
        let num = |b: Option<&Bytes>| -> u64 {
            b.and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let head = Timestamp(num(fields.first()));
        let mut messages = VecDeque::new();
        for entry in fields.get(5..).unwrap_or_default().chunks_exact(3) {
            let ts = Timestamp(num(entry.first()));
            let Some(id) = entry
                .get(1)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| Uuid::parse_str(s).ok())
            else {
                continue;
            };
            let members = Prepared::from_members(entry.get(2).cloned().unwrap_or_default());
            messages.push_back(Arc::new(Message::new(id, ts, &members)));
        }
        let complete = messages.len() < count;
        *cache = Cache {
            from: after.min(head),
            upto: if complete {
                head
            } else {
                messages.back().map_or(head, |m| m.timestamp)
            },
            complete,
            messages,
            epoch: Timestamp(num(fields.get(1))),
            lost: Timestamp(num(fields.get(2))),
            fresh: num(fields.get(3)) == 0,
            clock: Timestamp(num(fields.get(4))),
            valid: true,
            fetched: Some(asked),
            generation,
        };
        // A history just recreated is only "fresh" for the read that found it.
        if cache.fresh {
            cache.valid = false;
        }
        Ok(())
    }

    pub async fn timeout_mark(
        &self,
        floor: Timestamp,
        fallback: Timestamp,
        buffer: BufferConfig,
    ) -> Mark {
        let (stream, meta) = self.broker.keys(&self.channel);
        let mut inv = self.broker.scripts.timeout_mark.prepare_invoke();
        inv.key(&stream)
            .key(&meta)
            .arg(RedisBroker::ttl_secs(buffer))
            .arg(floor.0);
        match self.broker.invoke::<String>(inv).await {
            Ok(ts) if ts.is_empty() => Mark::Newer,
            Ok(ts) => Mark::At(ts.parse().map(Timestamp).unwrap_or(fallback)),
            // Broker down: hand the client its own cursor back. Lossless; it
            // simply asks again from where it was.
            Err(_) => Mark::At(fallback),
        }
    }

    /// The waiter's wakeup receiver (see `waiter::changed`).
    pub(in crate::broker) fn wake(&mut self) -> &mut Option<watch::Receiver<Timestamp>> {
        &mut self.rx
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let (broker, channel) = (&self.broker, &self.channel);
        waiter::leave(&mut self.rx, &self.slot.wake, || broker.release(channel));
    }
}

/// The "cache is stale" flag, taken by a read: set again when the read is
/// dropped before [`StaleFlag::done`].
struct StaleFlag<'a>(bool, &'a std::sync::atomic::AtomicBool);

impl<'a> StaleFlag<'a> {
    fn take(flag: &'a std::sync::atomic::AtomicBool) -> StaleFlag<'a> {
        StaleFlag(flag.swap(false, Ordering::AcqRel), flag)
    }

    fn done(mut self) {
        self.0 = false;
    }
}

impl Drop for StaleFlag<'_> {
    fn drop(&mut self) {
        if self.0 {
            self.1.store(true, Ordering::Release);
        }
    }
}
