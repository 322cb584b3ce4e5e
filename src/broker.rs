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

use std::sync::Arc;

use uuid::Uuid;

use crate::config::{BrokerConfig, BufferConfig};

pub use buffer::{Cursor, Read};
pub use message::{ChannelName, ChannelNameError, Message, PrepareError, Prepared, Timestamp};

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
}

impl Broker {
    pub fn new(config: &BrokerConfig) -> Broker {
        match config {
            BrokerConfig::Memory => Broker::Memory(Arc::new(memory::MemoryBroker::new())),
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
        }
    }

    /// Registers a waiter on `channel` (creating the channel).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the back end cannot be reached.
    pub async fn subscribe(
        &self,
        channel: &ChannelName,
        buffer: BufferConfig,
    ) -> Result<Subscription, BrokerError> {
        match self {
            Broker::Memory(m) => Ok(Subscription::Memory(m.subscribe(channel, buffer.max_age))),
        }
    }

    /// Trims expired history and frees idle channels.
    pub fn sweep(&self, buffer: BufferConfig) {
        match self {
            Broker::Memory(m) => m.sweep(buffer),
        }
    }

    pub fn info(&self, channel: &ChannelName) -> Option<ChannelInfo> {
        match self {
            Broker::Memory(m) => m.info(channel),
        }
    }

    /// (channels, buffered messages) held by this instance.
    pub fn totals(&self) -> (usize, usize) {
        match self {
            Broker::Memory(m) => m.totals(),
        }
    }

    /// Whether the back end is reachable (always, for memory).
    pub fn is_ready(&self) -> bool {
        match self {
            Broker::Memory(_) => true,
        }
    }
}

/// One waiter's registration on a channel; dropping it unregisters.
pub enum Subscription {
    Memory(memory::Subscription),
}

impl Subscription {
    /// The channel's head when the subscription began: the cursor for "only
    /// messages published after the request arrived".
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the back end cannot be reached.
    pub async fn head(&self) -> Result<Timestamp, BrokerError> {
        match self {
            Subscription::Memory(s) => Ok(s.head()),
        }
    }

    /// Up to `max` messages after `cursor`, and whether the cursor is a gap.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the back end cannot be reached.
    pub async fn read(&self, cursor: Cursor, max: usize) -> Result<Read, BrokerError> {
        match self {
            Subscription::Memory(s) => Ok(s.read(cursor, max)),
        }
    }

    /// The `timestamp` of a timeout answer: no later message is before it.
    pub async fn timeout_mark(&self) -> Timestamp {
        match self {
            Subscription::Memory(s) => s.timeout_mark(),
        }
    }

    /// Resolves when the channel may have new messages.
    pub async fn changed(&mut self) {
        match self {
            Subscription::Memory(s) => s.changed().await,
        }
    }
}
