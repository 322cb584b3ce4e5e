//! The in-process broker: channel buffers plus wakeups.
//!
//! Channels live in a sharded map so a publish to one channel never waits on
//! another shard. Each channel has a `watch` whose value is its head: a
//! publish bumps it, which wakes every receiver (the held polls) in O(N)
//! without holding any lock while they run. A woken poll re-reads the buffer
//! by its cursor; the wakeup itself carries nothing, so nothing can be lost
//! to a lagging or missed notification.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::buffer::{ChannelBuffer, Cursor, Mark, Read};
use super::message::{ChannelName, Prepared, Timestamp};
use super::waiter::{self, Relays, Wake};
use super::BufferConfig;
use super::{ChannelInfo, Published};
use crate::sharded::Sharded;

struct Slot {
    buffer: Mutex<ChannelBuffer>,
    wake: Arc<Wake>,
}

pub struct MemoryBroker {
    shards: Sharded<ChannelName, Arc<Slot>>,
    /// Start of this process: cursors from before it are gaps (history gone).
    epoch: Timestamp,
    relays: Relays,
}

impl MemoryBroker {
    pub fn new(relays: Relays) -> Self {
        MemoryBroker {
            shards: Sharded::new(),
            epoch: Timestamp::now(),
            relays,
        }
    }

    pub fn relays(&self) -> &Relays {
        &self.relays
    }

    /// The slot for `channel`, created if absent. Call with the shard locked.
    fn slot_in(
        &self,
        map: &mut HashMap<ChannelName, Arc<Slot>>,
        channel: &ChannelName,
        max_age: Duration,
    ) -> Arc<Slot> {
        map.entry(channel.clone())
            .or_insert_with(|| {
                // A new (or freed and re-created) channel can only have lost
                // messages that had expired anyway, or that a previous process held.
                let lost_before = self.epoch.max(Timestamp::now().saturating_sub(max_age));
                let buffer = ChannelBuffer::new(lost_before);
                let wake = Wake::new(&self.relays, buffer.head());
                Arc::new(Slot {
                    buffer: Mutex::new(buffer),
                    wake,
                })
            })
            .clone()
    }

    /// Appends every item, in order. Cannot fail: all validation happened
    /// when the items were prepared.
    pub fn publish(
        &self,
        items: &[(ChannelName, Prepared)],
        config: BufferConfig,
    ) -> Vec<Published> {
        let mut out = Vec::with_capacity(items.len());
        for (channel, prepared) in items {
            let (slot, message) = {
                // The shard lock is held across the push so the sweeper or a
                // leaving waiter cannot free the slot between lookup and push.
                let mut map = self.shards.shard(channel).lock();
                let slot = self.slot_in(&mut map, channel, config.max_age);
                let message = slot.buffer.lock().push(prepared, config.max_size);
                (slot, message)
            };
            let waiters = slot.wake.receiver_count();
            slot.wake.bump(&self.relays, message.timestamp);
            out.push(Published {
                channel: channel.clone(),
                id: message.id,
                timestamp: message.timestamp,
                waiters,
            });
        }
        out
    }

    pub fn subscribe(
        self: &Arc<Self>,
        channel: &ChannelName,
        buffer: BufferConfig,
    ) -> Subscription {
        let (slot, rx, head) = {
            let mut map = self.shards.shard(channel).lock();
            let slot = self.slot_in(&mut map, channel, buffer.max_age);
            // Taken together under the lock: every message after `head` bumps `rx`.
            let head = slot.buffer.lock().head();
            let rx = slot.wake.subscribe();
            (slot, rx, head)
        };
        Subscription {
            broker: self.clone(),
            channel: channel.clone(),
            slot,
            rx: Some(rx),
            head,
        }
    }

    /// Trims expired messages and frees channels with no waiters and no
    /// messages. Run periodically.
    pub fn sweep(&self, config: BufferConfig) {
        let cutoff = Timestamp::now().saturating_sub(config.max_age);
        for shard in self.shards.iter() {
            shard.lock().retain(|_, slot| {
                let mut buffer = slot.buffer.lock();
                buffer.trim_before(cutoff);
                !(buffer.is_empty() && slot.wake.receiver_count() == 0)
            });
        }
    }

    pub fn info(&self, channel: &ChannelName) -> Option<ChannelInfo> {
        let slot = self.shards.get(channel)?;
        let buffer = slot.buffer.lock();
        Some(ChannelInfo {
            waiters: slot.wake.receiver_count(),
            buffered: buffer.len(),
            last_timestamp: buffer.newest(),
        })
    }

    /// Up to `limit` channels with their state, most waiters first.
    pub fn channels(
        &self,
        limit: usize,
        matching: &str,
    ) -> (Vec<(ChannelName, ChannelInfo)>, usize) {
        let mut out: Vec<_> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let map = shard.lock();
                map.iter()
                    .filter(|(name, _)| name.matches(matching))
                    .map(|(name, slot)| {
                        let buffer = slot.buffer.lock();
                        let info = ChannelInfo {
                            waiters: slot.wake.receiver_count(),
                            buffered: buffer.len(),
                            last_timestamp: buffer.newest(),
                        };
                        (name.clone(), info)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| {
            b.1.waiters
                .cmp(&a.1.waiters)
                .then(b.1.buffered.cmp(&a.1.buffered))
        });
        let matched = out.len();
        out.truncate(limit);
        (out, matched)
    }

    /// (channels, buffered messages) over all channels.
    pub fn totals(&self) -> (usize, usize) {
        let mut channels = 0;
        let mut buffered = 0;
        for shard in self.shards.iter() {
            let map = shard.lock();
            channels += map.len();
            buffered += map.values().map(|s| s.buffer.lock().len()).sum::<usize>();
        }
        (channels, buffered)
    }

    fn release(&self, channel: &ChannelName) {
        let mut map = self.shards.shard(channel).lock();
        let free = map
            .get(channel)
            .is_some_and(|s| s.wake.receiver_count() == 0 && s.buffer.lock().is_empty());
        if free {
            map.remove(channel);
        }
    }
}

/// A waiter's registration on one channel. While it lives the channel is
/// kept; dropping it (poll answered, client gone) frees an empty channel.
pub struct Subscription {
    broker: Arc<MemoryBroker>,
    channel: ChannelName,
    slot: Arc<Slot>,
    /// `Some` until drop.
    rx: Option<watch::Receiver<Timestamp>>,
    /// The channel's head when this subscription began.
    head: Timestamp,
}

impl Subscription {
    pub fn head(&self) -> Timestamp {
        self.head
    }

    /// A read serves nothing `buffer`'s limits exclude now, whenever the
    /// sweep last ran.
    pub fn read(&self, cursor: Cursor, max: usize, buffer: BufferConfig, now: Timestamp) -> Read {
        self.slot.buffer.lock().read(cursor, max, buffer, now)
    }

    pub fn timeout_mark(&self, floor: Timestamp) -> Mark {
        self.slot.buffer.lock().timeout_mark(floor)
    }

    /// The waiter's wakeup receiver (see `waiter::changed`).
    pub(super) fn wake(&mut self) -> &mut Option<watch::Receiver<Timestamp>> {
        &mut self.rx
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let (broker, channel) = (&self.broker, &self.channel);
        waiter::leave(&mut self.rx, &self.slot.wake, || broker.release(channel));
    }
}
