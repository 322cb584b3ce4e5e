//! A hash map split into independently locked shards, so that work on one
//! key never waits on a lock held for another. Used for the broker's
//! channels and for the poll limits' per-client and per-channel counts.
//! Critical sections are short and synchronous: never hold a shard across
//! an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};

use parking_lot::Mutex;

use crate::defaults::MAP_SHARDS;

pub(crate) type Shard<K, V> = Mutex<HashMap<K, V>>;

pub(crate) struct Sharded<K, V> {
    shards: Box<[Shard<K, V>]>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    pub(crate) fn new() -> Self {
        Sharded {
            shards: (0..MAP_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// The shard that owns `key`.
    pub(crate) fn shard(&self, key: &K) -> &Shard<K, V> {
        &self.shards[(self.hasher.hash_one(key) as usize) % self.shards.len()]
    }

    pub(crate) fn get(&self, key: &K) -> Option<V>
    where
        V: Clone,
    {
        self.shard(key).lock().get(key).cloned()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Shard<K, V>> {
        self.shards.iter()
    }
}
