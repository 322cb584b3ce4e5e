//! One channel's history: the source of truth a waiter reads by cursor.
//!
//! # Invariants
//! - `messages` timestamps are strictly increasing, front to back.
//! - `head` is at least the newest message's timestamp, and every message
//!   pushed later gets a timestamp strictly after `head`. So a cursor equal to
//!   `head` (handed out in a timeout answer) misses nothing that comes later.
//! - `lost_before` is at least the timestamp of every message removed from
//!   this buffer, and of every message published before it was created. So a
//!   cursor `c < lost_before` may have missed messages (a gap), and a cursor
//!   `c >= lost_before` has missed none.
//! - A timeout mark is handed out only when no message came after what the
//!   poll last read (`Read::seen`): a message published between a poll's
//!   last read and its timeout answer must not fall behind the cursor that
//!   answer hands back.
//! - A read serves only what the buffer's limits allow *at the time of the
//!   read* (the newest `max_size`, none older than `max_age`), whatever has
//!   been trimmed so far: a message past its age is treated exactly as if
//!   the sweep had already removed it (a gap for a cursor before it).
//! - A cursor later than the broker's clock (and the channel's head) by
//!   more than `CURSOR_CLOCK_SKEW` was not handed out by this history (the
//!   clock was stepped back, the history was restored, a Redis failover
//!   went to a node whose clock is behind): every message stamped before it
//!   would be passed over, so it is a gap, read from the oldest.

use std::collections::VecDeque;
use std::sync::Arc;

use uuid::Uuid;

use super::message::{Message, Prepared, Timestamp};
use super::BufferConfig;
use crate::defaults::CURSOR_CLOCK_SKEW;

/// Where a reader stands in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// `since=0`: from the oldest buffered message; never a gap.
    Oldest,
    /// After this timestamp (`since=T`, or the head when the poll arrived).
    After(Timestamp),
    /// After the message with this id (`last_id=`).
    AfterId(Uuid),
    /// The newest `max` a read asks for (GRIP looks for a `prev-id`
    /// there first: nearly always one of the last few); never a gap.
    Newest,
}

/// What a read found.
#[derive(Debug, Default)]
pub struct Read {
    /// Oldest first, at most the `max` asked for.
    pub messages: Vec<Arc<Message>>,
    /// The cursor is older than the history: messages may have been missed.
    pub gap: bool,
    /// Every message stamped at or before this was in view of the read
    /// (the channel's head then): what a timeout mark is checked against.
    pub seen: Timestamp,
}

/// A timeout answer's cursor, or word that it cannot be given yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    At(Timestamp),
    /// A message came after the poll's last read: read again.
    Newer,
}

#[derive(Debug)]
pub struct ChannelBuffer {
    messages: VecDeque<Arc<Message>>,
    head: Timestamp,
    lost_before: Timestamp,
}

impl ChannelBuffer {
    /// A buffer that can vouch for nothing before `lost_before`.
    pub fn new(lost_before: Timestamp) -> Self {
        ChannelBuffer {
            messages: VecDeque::new(),
            head: Timestamp::now().max(lost_before),
            lost_before,
        }
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn head(&self) -> Timestamp {
        self.head
    }

    pub fn newest(&self) -> Option<Timestamp> {
        self.messages.back().map(|m| m.timestamp)
    }

    /// Appends a message, then drops the oldest beyond `max_size`.
    pub fn push(&mut self, prepared: &Prepared, max_size: usize) -> Arc<Message> {
        self.push_at(Timestamp::mint(self.head), prepared, max_size)
    }

    /// `push`, with the timestamp given (tests set the clock this way).
    fn push_at(
        &mut self,
        timestamp: Timestamp,
        prepared: &Prepared,
        max_size: usize,
    ) -> Arc<Message> {
        let message = Arc::new(Message::new(Uuid::new_v4(), timestamp, prepared));
        self.head = timestamp;
        self.messages.push_back(message.clone());
        while self.messages.len() > max_size.max(1) {
            self.evict_front();
        }
        message
    }

    /// Drops messages older than `cutoff`.
    pub fn trim_before(&mut self, cutoff: Timestamp) {
        while self.messages.front().is_some_and(|m| m.timestamp < cutoff) {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if let Some(m) = self.messages.pop_front() {
            self.lost_before = self.lost_before.max(m.timestamp);
        }
    }

    /// A cursor for a timeout answer: the wall clock, and never before
    /// anything already sent. Later messages are minted after it. Refused
    /// (`Newer`) when a message newer than `floor` (what the poll has seen)
    /// is in the buffer: the mark would pass over it.
    pub fn timeout_mark(&mut self, floor: Timestamp) -> Mark {
        if self.newest().is_some_and(|newest| newest > floor) {
            return Mark::Newer;
        }
        self.head = self.head.max(Timestamp::now());
        Mark::At(self.head)
    }

    /// Up to `max` messages after `cursor`, of those `limits` allow at `now`.
    pub fn read(&self, cursor: Cursor, max: usize, limits: BufferConfig, now: Timestamp) -> Read {
        // The servable part: the newest `max_size`, none older than `max_age`.
        let cutoff = now.saturating_sub(limits.max_age);
        let by_size = self.messages.len().saturating_sub(limits.max_size.max(1));
        // Nearly always nothing has expired: one look at the oldest says so.
        let by_age = match self.messages.front() {
            Some(oldest) if oldest.timestamp < cutoff => {
                self.messages.partition_point(|m| m.timestamp < cutoff)
            }
            _ => 0,
        };
        let first = by_size.max(by_age);
        let lost_before = match first.checked_sub(1).and_then(|i| self.messages.get(i)) {
            Some(newest_gone) => self.lost_before.max(newest_gone.timestamp),
            None => self.lost_before,
        };
        let (after, gap) = match cursor {
            Cursor::Oldest => (Timestamp(0), false),
            Cursor::Newest => {
                let start = first.max(self.messages.len().saturating_sub(max));
                return Read {
                    messages: self.messages.range(start..).cloned().collect(),
                    gap: false,
                    seen: self.head,
                };
            }
            Cursor::After(c) if from_the_future(c, self.head.max(now)) => (Timestamp(0), true),
            Cursor::After(c) => (c, c < lost_before),
            Cursor::AfterId(id) => match self.messages.range(first..).find(|m| m.id == id) {
                Some(m) => (m.timestamp, false),
                // Unknown id: trimmed, expired, or from before this history. Resync.
                None => (Timestamp(0), true),
            },
        };
        // Binary searches, not a walk: a channel can hold thousands.
        let start = first.max(self.messages.partition_point(|m| m.timestamp <= after));
        Read {
            messages: self.messages.range(start..).take(max).cloned().collect(),
            gap,
            seen: self.head,
        }
    }
}

/// Whether `cursor` lies ahead of a history whose head, or its broker's
/// clock, is `latest` (see the invariants).
pub fn from_the_future(cursor: Timestamp, latest: Timestamp) -> bool {
    cursor > latest.saturating_add(CURSOR_CLOCK_SKEW)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Prepared {
        Prepared::from_json(b"{}").unwrap()
    }

    fn stamps(read: &Read) -> Vec<Timestamp> {
        read.messages.iter().map(|m| m.timestamp).collect()
    }

    const ROOMY: BufferConfig = BufferConfig {
        max_size: 1000,
        max_age: std::time::Duration::from_secs(3600),
    };

    /// A read under roomy limits, now.
    trait ReadNow {
        fn read_now(&self, cursor: Cursor, max: usize) -> Read;
    }

    impl ReadNow for ChannelBuffer {
        fn read_now(&self, cursor: Cursor, max: usize) -> Read {
            self.read(cursor, max, ROOMY, Timestamp::now())
        }
    }

    #[test]
    fn reads_after_a_cursor_oldest_first() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let t: Vec<_> = (0..5).map(|_| b.push(&body(), 10).timestamp).collect();
        assert!(t.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            stamps(&b.read_now(Cursor::After(t[1]), 10)),
            t[2..].to_vec()
        );
        assert_eq!(
            stamps(&b.read_now(Cursor::After(t[1]), 2)),
            t[2..4].to_vec()
        );
        assert_eq!(stamps(&b.read_now(Cursor::Oldest, 1)), vec![t[0]]);
        assert_eq!(stamps(&b.read_now(Cursor::Newest, 2)), vec![t[3], t[4]]);
        assert_eq!(stamps(&b.read_now(Cursor::Newest, 99)), t.to_vec());
        assert!(b.read_now(Cursor::After(t[4]), 10).messages.is_empty());
    }

    #[test]
    fn size_eviction_makes_older_cursors_a_gap() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let t: Vec<_> = (0..5).map(|_| b.push(&body(), 3).timestamp).collect();
        assert_eq!(b.len(), 3);
        let r = b.read_now(Cursor::After(t[0]), 10);
        assert!(r.gap, "t[1] was evicted after t[0]");
        assert_eq!(stamps(&r), t[2..].to_vec());
        let r = b.read_now(Cursor::After(t[1]), 10);
        assert!(!r.gap, "a client that saw t[1] missed nothing");
        assert!(!b.read_now(Cursor::Oldest, 10).gap);
    }

    #[test]
    fn age_trim_and_creation_bound_the_history() {
        let mut b = ChannelBuffer::new(Timestamp(1_000));
        assert!(b.read_now(Cursor::After(Timestamp(999)), 1).gap);
        assert!(!b.read_now(Cursor::After(Timestamp(1_000)), 1).gap);
        let m = b.push(&body(), 10);
        b.trim_before(Timestamp(m.timestamp.0 + 1));
        assert!(b.is_empty());
        assert!(b.read_now(Cursor::After(Timestamp(1_000)), 1).gap);
        assert!(!b.read_now(Cursor::After(m.timestamp), 1).gap);
    }

    #[test]
    fn last_id_finds_its_message_or_reports_a_gap() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let first = b.push(&body(), 10);
        let second = b.push(&body(), 10);
        let r = b.read_now(Cursor::AfterId(first.id), 10);
        assert!(!r.gap);
        assert_eq!(stamps(&r), vec![second.timestamp]);
        let r = b.read_now(Cursor::AfterId(Uuid::new_v4()), 10);
        assert!(r.gap);
        assert_eq!(r.messages.len(), 2);
    }

    #[test]
    fn a_timeout_mark_is_never_behind_and_later_messages_come_after_it() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let m = b.push(&body(), 10);
        let Mark::At(mark) = b.timeout_mark(m.timestamp) else {
            panic!("nothing after what was seen")
        };
        assert!(mark >= m.timestamp);
        let next = b.push(&body(), 10);
        assert!(next.timestamp > mark);
        assert_eq!(
            stamps(&b.read_now(Cursor::After(mark), 10)),
            vec![next.timestamp]
        );
    }

    #[test]
    fn a_message_past_its_age_is_never_served_whatever_the_sweep_did() {
        let t0 = Timestamp(1_000_000_000);
        let mut b = ChannelBuffer::new(t0);
        let old = b.push_at(Timestamp(t0.0 + 1), &body(), 10);
        let young = b.push_at(Timestamp(t0.0 + 1_500_000), &body(), 10);
        let limits = BufferConfig {
            max_size: 10,
            max_age: std::time::Duration::from_secs(1),
        };
        // The clock reads 1.6 s after the older message; no sweep ran.
        let now = Timestamp(old.timestamp.0 + 1_600_000);
        let r = b.read(Cursor::Oldest, 10, limits, now);
        assert_eq!(
            stamps(&r),
            vec![young.timestamp],
            "the old one expired at read time"
        );
        let r = b.read(Cursor::After(t0), 10, limits, now);
        assert!(r.gap, "a cursor before the expired message missed it");
        assert_eq!(stamps(&r), vec![young.timestamp]);
        let r = b.read(Cursor::After(old.timestamp), 10, limits, now);
        assert!(!r.gap, "a cursor at the expired message missed nothing");
        assert!(b.read(Cursor::AfterId(old.id), 10, limits, now).gap);
        assert!(!b.read(Cursor::AfterId(young.id), 10, limits, now).gap);
    }

    #[test]
    fn only_the_newest_max_size_are_served_after_a_smaller_limit() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let t: Vec<_> = (0..5).map(|_| b.push(&body(), 10).timestamp).collect();
        let limits = BufferConfig {
            max_size: 2,
            max_age: std::time::Duration::from_secs(3600),
        };
        let r = b.read(Cursor::Oldest, 10, limits, Timestamp::now());
        assert_eq!(stamps(&r), t[3..].to_vec());
        assert!(
            b.read(Cursor::After(t[1]), 10, limits, Timestamp::now())
                .gap
        );
        assert!(
            !b.read(Cursor::After(t[2]), 10, limits, Timestamp::now())
                .gap
        );
    }

    #[test]
    fn a_cursor_from_the_future_is_a_gap_read_from_the_oldest() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let t: Vec<_> = (0..3).map(|_| b.push(&body(), 10).timestamp).collect();
        let ahead = Timestamp::now().saturating_add(CURSOR_CLOCK_SKEW * 3);
        let r = b.read_now(Cursor::After(ahead), 10);
        assert!(r.gap, "messages stamped before it would be passed over");
        assert_eq!(stamps(&r), t);
        assert!(r.seen <= Timestamp::now());
        // Within the skew of the clock: an ordinary cursor.
        let near = Timestamp::now().saturating_add(CURSOR_CLOCK_SKEW / 2);
        let r = b.read_now(Cursor::After(near), 10);
        assert!(!r.gap && r.messages.is_empty());
    }

    #[test]
    fn no_mark_passes_over_a_message_the_poll_has_not_read() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let read = b.read_now(Cursor::After(b.head()), 10);
        assert!(read.messages.is_empty());
        // A publish lands between the poll's last read and its timeout answer.
        let late = b.push(&body(), 10);
        assert_eq!(b.timeout_mark(read.seen), Mark::Newer);
        let again = b.read_now(Cursor::After(read.seen), 10);
        assert_eq!(stamps(&again), vec![late.timestamp]);
        assert!(matches!(b.timeout_mark(again.seen), Mark::At(m) if m >= late.timestamp));
    }
}
