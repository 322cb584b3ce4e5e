//! Item ids seen on each channel within `GRIP_ID_TTL`: a publisher that
//! sends the same item again (a retry after a lost acknowledgement) has it
//! delivered once, as Pushpin does. Per instance, bounded in number.
//!
//! An id is remembered only once its item is stored: a publish that fails
//! (or is abandoned) leaves nothing behind, so its retry goes through. Two
//! publishes of one id at the same instant may then both be stored: a
//! duplicate delivered, never an acknowledged item lost.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::broker::ChannelName;
use crate::defaults::{GRIP_ID_CACHE_MAX, GRIP_ID_TTL};

pub type Key = (ChannelName, String);

#[derive(Default)]
pub struct SeenIds {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashSet<Key>,
    /// Oldest first: expiry and the cap both drop from the front.
    order: VecDeque<(Instant, Key)>,
}

impl SeenIds {
    /// Per key, whether it is new: not seen within the TTL, and not earlier
    /// in `keys` (an item without id is always new).
    pub fn fresh(&self, keys: &[Option<Key>]) -> Vec<bool> {
        let mut inner = self.inner.lock();
        inner.expire(Instant::now(), GRIP_ID_TTL);
        let mut batch = HashSet::new();
        keys.iter()
            .map(|key| match key {
                None => true,
                Some(key) => !inner.keys.contains(key) && batch.insert(key),
            })
            .collect()
    }

    /// Forgets the ids older than the TTL (the sweep's tick: without a
    /// publish to look, a burst of ids would be kept for ever), and gives
    /// back the room a burst took once it is mostly gone.
    pub fn expire(&self) {
        let mut inner = self.inner.lock();
        inner.expire(Instant::now(), GRIP_ID_TTL);
        if inner.order.capacity() > 4 * inner.order.len().max(64) {
            inner.order.shrink_to_fit();
            inner.keys.shrink_to_fit();
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remembers the ids of items just stored.
    pub fn remember(&self, keys: impl IntoIterator<Item = Key>) {
        self.remember_at(keys, Instant::now(), GRIP_ID_CACHE_MAX);
    }

    fn remember_at(&self, keys: impl IntoIterator<Item = Key>, now: Instant, cap: usize) {
        let mut inner = self.inner.lock();
        for key in keys {
            if inner.keys.insert(key.clone()) {
                inner.order.push_back((now, key));
            }
        }
        while inner.order.len() > cap {
            if let Some((_, key)) = inner.order.pop_front() {
                inner.keys.remove(&key);
            }
        }
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < ttl {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.keys.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str, id: &str) -> Key {
        (ChannelName::parse(c).unwrap(), id.to_owned())
    }

    #[test]
    fn only_stored_ids_are_repeats_per_channel_and_within_a_batch() {
        let seen = SeenIds::default();
        let batch = [
            Some(key("a", "1")),
            Some(key("b", "1")),
            None,
            Some(key("a", "1")),
        ];
        assert_eq!(seen.fresh(&batch), [true, true, true, false]);
        // Nothing was stored yet: still fresh (a failed publish leaves no trace).
        assert_eq!(seen.fresh(&[Some(key("a", "1"))]), [true]);
        seen.remember([key("a", "1")]);
        assert_eq!(
            seen.fresh(&[Some(key("a", "1")), Some(key("b", "1"))]),
            [false, true]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ids_expire_after_the_ttl_and_the_cap_forgets_the_oldest() {
        let seen = SeenIds::default();
        seen.remember([key("a", "1")]);
        tokio::time::advance(GRIP_ID_TTL - Duration::from_secs(1)).await;
        assert_eq!(seen.fresh(&[Some(key("a", "1"))]), [false]);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(seen.fresh(&[Some(key("a", "1"))]), [true]);
        // The sweep forgets them without a publish to look.
        seen.remember([key("b", "1")]);
        tokio::time::advance(GRIP_ID_TTL).await;
        seen.expire();
        assert!(seen.is_empty());
        let now = Instant::now();
        seen.remember_at([key("a", "2"), key("a", "3"), key("a", "4")], now, 2);
        assert_eq!(
            seen.fresh(&[
                Some(key("a", "2")),
                Some(key("a", "3")),
                Some(key("a", "4"))
            ]),
            [true, false, false]
        );
    }
}
