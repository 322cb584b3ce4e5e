//! The per-instance channel map both back ends keep: sharded so that work on
//! one channel never waits on a lock another channel's publish holds.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::message::{ChannelName, Timestamp};

const SHARDS: usize = 64;

pub(super) type Shard<V> = Mutex<HashMap<ChannelName, Arc<V>>>;

pub(super) struct Shards<V> {
    shards: Box<[Shard<V>]>,
    hasher: RandomState,
}

impl<V> Shards<V> {
    pub(super) fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    pub(super) fn shard(&self, channel: &ChannelName) -> &Shard<V> {
        &self.shards[(self.hasher.hash_one(channel) as usize) % self.shards.len()]
    }

    pub(super) fn get(&self, channel: &ChannelName) -> Option<Arc<V>> {
        self.shard(channel).lock().get(channel).cloned()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Shard<V>> {
        self.shards.iter()
    }
}

/// Unregisters a waiter (drops its receiver) and calls `release` when it was
/// the channel's last one, so an unused channel can be freed.
pub(super) fn leave(
    rx: &mut Option<watch::Receiver<Timestamp>>,
    wake: &watch::Sender<Timestamp>,
    release: impl FnOnce(),
) {
    *rx = None;
    if wake.receiver_count() == 0 {
        release();
    }
}

/// Waits for the next change of a waiter's wakeup channel. The sender lives
/// in the slot the waiter holds, so it cannot close while we wait; `None`
/// (a subscription being dropped) waits forever.
pub(super) async fn changed(rx: &mut Option<watch::Receiver<Timestamp>>) {
    let open = match rx.as_mut() {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !open {
        std::future::pending::<()>().await;
    }
}
