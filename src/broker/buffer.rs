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

use std::collections::VecDeque;
use std::sync::Arc;

use uuid::Uuid;

use super::message::{Message, Prepared, Timestamp};

/// Where a reader stands in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// `since=0`: from the oldest buffered message; never a gap.
    Oldest,
    /// After this timestamp (`since=T`, or the head when the poll arrived).
    After(Timestamp),
    /// After the message with this id (`last_id=`).
    AfterId(Uuid),
}

/// What a read found.
#[derive(Debug, Default)]
pub struct Read {
    /// Oldest first, at most the `max` asked for.
    pub messages: Vec<Arc<Message>>,
    /// The cursor is older than the history: messages may have been missed.
    pub gap: bool,
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
        let timestamp = Timestamp::mint(self.head);
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
    /// anything already sent. Later messages are minted after it.
    pub fn timeout_mark(&mut self) -> Timestamp {
        self.head = self.head.max(Timestamp::now());
        self.head
    }

    /// Up to `max` messages after `cursor`.
    pub fn read(&self, cursor: Cursor, max: usize) -> Read {
        let (after, gap) = match cursor {
            Cursor::Oldest => (Timestamp(0), false),
            Cursor::After(c) => (c, c < self.lost_before),
            Cursor::AfterId(id) => match self.messages.iter().find(|m| m.id == id) {
                Some(m) => (m.timestamp, false),
                // Unknown id: trimmed, or from before this history. Resync.
                None => (Timestamp(0), true),
            },
        };
        let start = self.messages.partition_point(|m| m.timestamp <= after);
        Read {
            messages: self
                .messages
                .iter()
                .skip(start)
                .take(max)
                .cloned()
                .collect(),
            gap,
        }
    }
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

    #[test]
    fn reads_after_a_cursor_oldest_first() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let t: Vec<_> = (0..5).map(|_| b.push(&body(), 10).timestamp).collect();
        assert!(t.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(stamps(&b.read(Cursor::After(t[1]), 10)), t[2..].to_vec());
        assert_eq!(stamps(&b.read(Cursor::After(t[1]), 2)), t[2..4].to_vec());
        assert_eq!(stamps(&b.read(Cursor::Oldest, 1)), vec![t[0]]);
        assert!(b.read(Cursor::After(t[4]), 10).messages.is_empty());
    }

    #[test]
    fn size_eviction_makes_older_cursors_a_gap() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let t: Vec<_> = (0..5).map(|_| b.push(&body(), 3).timestamp).collect();
        assert_eq!(b.len(), 3);
        let r = b.read(Cursor::After(t[0]), 10);
        assert!(r.gap, "t[1] was evicted after t[0]");
        assert_eq!(stamps(&r), t[2..].to_vec());
        let r = b.read(Cursor::After(t[1]), 10);
        assert!(!r.gap, "a client that saw t[1] missed nothing");
        assert!(!b.read(Cursor::Oldest, 10).gap);
    }

    #[test]
    fn age_trim_and_creation_bound_the_history() {
        let mut b = ChannelBuffer::new(Timestamp(1_000));
        assert!(b.read(Cursor::After(Timestamp(999)), 1).gap);
        assert!(!b.read(Cursor::After(Timestamp(1_000)), 1).gap);
        let m = b.push(&body(), 10);
        b.trim_before(Timestamp(m.timestamp.0 + 1));
        assert!(b.is_empty());
        assert!(b.read(Cursor::After(Timestamp(1_000)), 1).gap);
        assert!(!b.read(Cursor::After(m.timestamp), 1).gap);
    }

    #[test]
    fn last_id_finds_its_message_or_reports_a_gap() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let first = b.push(&body(), 10);
        let second = b.push(&body(), 10);
        let r = b.read(Cursor::AfterId(first.id), 10);
        assert!(!r.gap);
        assert_eq!(stamps(&r), vec![second.timestamp]);
        let r = b.read(Cursor::AfterId(Uuid::new_v4()), 10);
        assert!(r.gap);
        assert_eq!(r.messages.len(), 2);
    }

    #[test]
    fn a_timeout_mark_is_never_behind_and_later_messages_come_after_it() {
        let mut b = ChannelBuffer::new(Timestamp(0));
        let m = b.push(&body(), 10);
        let mark = b.timeout_mark();
        assert!(mark >= m.timestamp);
        let next = b.push(&body(), 10);
        assert!(next.timestamp > mark);
        assert_eq!(
            stamps(&b.read(Cursor::After(mark), 10)),
            vec![next.timestamp]
        );
    }
}
