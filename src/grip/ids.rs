//! Item ids seen on each channel within `GRIP_ID_TTL`: a publisher that
//! sends the same item twice (a retry after a lost acknowledgement) has it
//! delivered once, as Pushpin does. Per instance, bounded in number.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::broker::ChannelName;
use crate::defaults::{GRIP_ID_CACHE_MAX, GRIP_ID_TTL};

type Key = (ChannelName, String);

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
    /// Records each key; returns, per key, whether it is new (to publish).
    /// A key recorded by a publish that then fails must be [`forget`]ed.
    ///
    /// [`forget`]: SeenIds::forget
    pub fn record(&self, keys: &[Option<Key>]) -> Vec<bool> {
        self.record_at(keys, Instant::now(), GRIP_ID_TTL, GRIP_ID_CACHE_MAX)
    }

    fn record_at(
        &self,
        keys: &[Option<Key>],
        now: Instant,
        ttl: Duration,
        cap: usize,
    ) -> Vec<bool> {
        let mut inner = self.inner.lock();
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < ttl && inner.order.len() < cap {
                break;
            }
            if let Some((_, key)) = inner.order.pop_front() {
                inner.keys.remove(&key);
            }
        }
        keys.iter()
            .map(|key| match key {
                None => true,
                Some(key) => {
                    let new = inner.keys.insert(key.clone());
                    if new {
                        inner.order.push_back((now, key.clone()));
                    }
                    new
                }
            })
            .collect()
    }

    /// Takes back keys whose publish failed, so that a retry is not dropped.
    pub fn forget(&self, keys: impl IntoIterator<Item = Key>) {
        let mut inner = self.inner.lock();
        for key in keys {
            inner.keys.remove(&key);
            inner.order.retain(|(_, k)| k != &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str, id: &str) -> Option<Key> {
        Some((ChannelName::parse(c).unwrap(), id.to_owned()))
    }

    #[test]
    fn a_repeat_within_the_ttl_is_dropped_per_channel() {
        let seen = SeenIds::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        assert_eq!(
            seen.record_at(&[key("a", "1"), key("b", "1"), None], t0, ttl, 10),
            [true, true, true]
        );
        assert_eq!(
            seen.record_at(
                &[key("a", "1"), None],
                t0 + Duration::from_secs(59),
                ttl,
                10
            ),
            [false, true]
        );
        assert_eq!(
            seen.record_at(&[key("a", "1")], t0 + Duration::from_secs(61), ttl, 10),
            [true]
        );
    }

    #[test]
    fn the_cap_forgets_the_oldest_and_a_failed_publish_is_forgotten() {
        let seen = SeenIds::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        seen.record_at(&[key("a", "1"), key("a", "2")], t0, ttl, 2);
        assert_eq!(seen.record_at(&[key("a", "3")], t0, ttl, 2), [true]);
        // "1" made room for "3".
        assert_eq!(seen.record_at(&[key("a", "1")], t0, ttl, 3), [true]);
        seen.forget([(ChannelName::parse("a").unwrap(), "3".to_owned())]);
        assert_eq!(seen.record_at(&[key("a", "3")], t0, ttl, 10), [true]);
    }
}
