//! The channel broker: where messages are stored and waiters are woken.
//!
//! [`Broker`] is the seam between the poll/webhook handlers and the storage
//! back end. Handlers see only this contract:
//! - `publish` appends messages, minting per-channel strictly increasing
//!   timestamps, and wakes that channel's waiters;
//! - `subscribe` registers a waiter; its [`Subscription`] reads by cursor and
//!   waits for change. The history is the truth, the wakeup only a hint.

mod buffer;
mod memory;
mod message;
mod redis;
mod waiter;

use std::num::NonZeroUsize;
use std::sync::Arc;

use uuid::Uuid;

pub use buffer::{Cursor, Mark, Read};
pub use message::{
    held_bytes, ChannelName, ChannelNameError, Message, PrepareError, Prepared, Timestamp,
};
pub use redis::RedisSettings;
use waiter::Relays;

/// Per-channel history kept for catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    /// At least 1.
    pub max_size: usize,
    pub max_age: std::time::Duration,
}

/// Which back end holds the channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerConfig {
    /// Channels live in this process.
    Memory,
    /// Channels and history live in Redis, shared by every instance.
    Redis(RedisSettings),
}

/// The result of one published item.
#[derive(Debug, Clone)]
pub struct Published {
    pub channel: ChannelName,
    pub id: Uuid,
    pub timestamp: Timestamp,
    /// Waiters registered on the channel at publish time (this instance).
    pub waiters: usize,
}

/// Debug view of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub waiters: usize,
    pub buffered: usize,
    pub last_timestamp: Option<Timestamp>,
}

/// Why the broker could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable")]
    Unavailable,
}

/// A handle to the configured back end; cheap to clone.
#[derive(Clone)]
pub enum Broker {
    Memory(Arc<memory::MemoryBroker>),
    Redis(Arc<redis::RedisBroker>),
}

impl Broker {
    /// Builds the back end; a Redis broker connects in the background (see
    /// [`Broker::run`]), so pollgate starts, and proxies, with Redis down.
    ///
    /// # Errors
    /// A Redis URL the client refuses (validation has already checked it).
    ///
    /// `threads`: the serving threads (`server.threads`) whose waiters it
    /// wakes; each runs the relay [`Broker::relay_here`] gives it.
    pub fn new(config: &BrokerConfig, threads: NonZeroUsize) -> Result<Broker, BrokerError> {
        let relays = Relays::new(threads);
        Ok(match config {
            BrokerConfig::Memory => Broker::Memory(Arc::new(memory::MemoryBroker::new(relays))),
            BrokerConfig::Redis(settings) => Broker::Redis(
                redis::RedisBroker::new(settings.clone(), relays)
                    .map_err(|_| BrokerError::Unavailable)?,
            ),
        })
    }

    /// The task that wakes the calling serving thread's waiters when another
    /// thread publishes (see `waiter`): spawn it on each serving thread.
    /// `None` where there is nothing to relay (one thread, or already running).
    pub fn relay_here(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        match self {
            Broker::Memory(m) => m.relays().relay_here(),
            Broker::Redis(r) => r.relays().relay_here(),
        }
    }

    /// Background work until `shutdown`: connection upkeep for Redis.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        match self {
            Broker::Memory(_) => {}
            Broker::Redis(r) => r.run(shutdown).await,
        }
    }

    /// Publishes every item in order, all or nothing.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the back end cannot store them.
    pub async fn publish(
        &self,
        items: &[(ChannelName, Prepared)],
        buffer: BufferConfig,
    ) -> Result<Vec<Published>, BrokerError> {
        match self {
            Broker::Memory(m) => Ok(m.publish(items, buffer)),
            Broker::Redis(r) => r.publish(items, buffer).await,
        }
    }

    /// The clock that stamps messages (Redis's, for the Redis broker): a
    /// cursor taken from it does not depend on this host's clock (with
    /// Redis Cluster, on the nodes' clocks agreeing).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the back end cannot be reached.
    pub async fn now(&self) -> Result<Timestamp, BrokerError> {
        match self {
            Broker::Memory(_) => Ok(Timestamp::now()),
            Broker::Redis(r) => Box::pin(r.now()).await,
        }
    }

    /// Registers a waiter on `channel` (creating the channel). Local on both
    /// back ends (Redis waiters share the instance's one notification
    /// connection), so it never waits and never fails.
    pub fn subscribe(&self, channel: &ChannelName, buffer: BufferConfig) -> Subscription {
        match self {
            Broker::Memory(m) => Subscription::Memory(m.subscribe(channel, buffer)),
            Broker::Redis(r) => Subscription::Redis(r.subscribe(channel)),
        }
    }

    /// Trims expired history and frees idle channels.
    pub fn sweep(&self, buffer: BufferConfig) {
        match self {
            Broker::Memory(m) => m.sweep(buffer),
            // Redis trims on publish and expires idle keys itself.
            Broker::Redis(_) => {}
        }
    }

    pub fn info(&self, channel: &ChannelName) -> Option<ChannelInfo> {
        match self {
            Broker::Memory(m) => m.info(channel),
            Broker::Redis(r) => r.info(channel),
        }
    }

    /// Up to `limit` channels held by this instance whose names contain
    /// `matching`, in any case (all with ""), most waiters first; and how
    /// many match in all.
    pub fn channels(
        &self,
        limit: usize,
        matching: &str,
    ) -> (Vec<(ChannelName, ChannelInfo)>, usize) {
        match self {
            Broker::Memory(m) => m.channels(limit, matching),
            Broker::Redis(r) => r.channels(limit, matching),
        }
    }

    /// The back end's name, as the config spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Broker::Memory(_) => "memory",
            Broker::Redis(_) => "redis",
        }
    }

    /// (channels, buffered messages) held by this instance.
    pub fn totals(&self) -> (usize, usize) {
        match self {
            Broker::Memory(m) => m.totals(),
            Broker::Redis(r) => r.totals(),
        }
    }

    /// Whether the back end is reachable (always, for memory).
    pub fn is_ready(&self) -> bool {
        match self {
            Broker::Memory(_) => true,
            Broker::Redis(r) => r.is_ready(),
        }
    }
}

/// One waiter's registration on a channel; dropping it unregisters.
pub enum Subscription {
    Memory(memory::Subscription),
    Redis(redis::Subscription),
}

impl Subscription {
    /// The channel's head when the subscription began: the cursor for "only
    /// messages published after the request arrived".
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the back end cannot be reached.
    pub async fn head(&self, buffer: BufferConfig) -> Result<Timestamp, BrokerError> {
        match self {
            Subscription::Memory(s) => Ok(s.head()),
            // Boxed: a Redis round trip's future would otherwise make
            // every held poll (memory broker too) as large as itself.
            Subscription::Redis(s) => Box::pin(s.head(buffer)).await,
        }
    }

    /// Up to `max` messages after `cursor`, of those `buffer`'s limits
    /// allow at `now`, and whether the cursor is a gap. (The limits and the
    /// clock come with each call: a held poll's subscription stays small,
    /// and the caller's one clock reading serves the read and its metrics.)
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the back end cannot be reached.
    pub async fn read(
        &self,
        cursor: Cursor,
        max: usize,
        buffer: BufferConfig,
        now: Timestamp,
    ) -> Result<Read, BrokerError> {
        match self {
            Subscription::Memory(s) => Ok(s.read(cursor, max, buffer, now)),
            Subscription::Redis(s) => Box::pin(s.read(cursor, max, buffer, now)).await,
        }
    }

    /// The `timestamp` of a timeout answer: no later message is before it,
    /// and no message newer than `floor` (what the poll has read, or its own
    /// cursor if later) is passed over (`Mark::Newer` then: read again).
    /// `fallback` (the client's own cursor) is used when the broker cannot
    /// be asked: the client then simply polls again from where it was.
    pub async fn timeout_mark(
        &self,
        floor: Timestamp,
        fallback: Timestamp,
        buffer: BufferConfig,
    ) -> Mark {
        match self {
            Subscription::Memory(s) => s.timeout_mark(floor),
            Subscription::Redis(s) => Box::pin(s.timeout_mark(floor, fallback, buffer)).await,
        }
    }

    /// Whether the channel was announced to have changed since this
    /// subscription last woke: when it has not, a reader that had read
    /// everything there was has nothing new to read (a message is stored
    /// before it is announced).
    pub fn has_changed(&mut self) -> bool {
        waiter::has_changed(match self {
            Subscription::Memory(s) => s.wake(),
            Subscription::Redis(s) => s.wake(),
        })
    }

    /// Resolves when the channel may have new messages. Not an `async fn`:
    /// both back ends wait on the same kind of receiver, and a held poll
    /// carries this future, so it adds no layer of its own.
    pub fn changed(&mut self) -> impl std::future::Future<Output = ()> + Send + '_ {
        waiter::changed(match self {
            Subscription::Memory(s) => s.wake(),
            Subscription::Redis(s) => s.wake(),
        })
    }
}
