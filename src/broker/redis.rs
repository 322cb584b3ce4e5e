//! The Redis back end: several pollgate instances share channels and history.
//!
//! Per channel (keys of one channel share a hash slot, for Redis Cluster):
//! - `{prefix}{channel}:s`, a Stream: the history. Entry IDs are `<T>-0`,
//!   where T is the message timestamp in microseconds, minted inside Redis by
//!   a script from Redis's clock, so instance clocks never matter.
//! - `{prefix}{channel}:m`, a hash: `head` (newest timestamp or timeout mark),
//!   `epoch` (when this history began: cursors before it are gaps, which is
//!   how a Redis restart or an evicted key shows up as `gap: true`), and
//!   `lost` (the newest trimmed timestamp).
//!
//! Both expire when the channel is idle. One Pub/Sub channel,
//! `{prefix}notify`, carries `"<channel> <T>"` for every publish; each instance
//! keeps one subscription to it and wakes its local waiters, which read from
//! the history by cursor (the history is the truth; a notification is a hint).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::message::{ChannelName, Prepared, Timestamp};
use super::waiter::{Relays, Wake};
use super::BufferConfig;
use super::{BrokerError, ChannelInfo, Published};
use crate::defaults::{
    REDIS_BACKOFF_MAX, REDIS_BACKOFF_MIN, REDIS_CONNECT_TIMEOUT, REDIS_IDLE_TTL_FACTOR,
    REDIS_IDLE_TTL_MIN, REDIS_TIMEOUT,
};
use crate::sharded::Sharded;

mod subscription;

use subscription::Cache;
pub use subscription::Subscription;

/// The Lua scripts (see each file): `common.lua` is prepended to each.
const COMMON: &str = include_str!("redis/common.lua");
const PUBLISH: &str = include_str!("redis/publish.lua");
const READ: &str = include_str!("redis/read.lua");
const TIMEOUT_MARK: &str = include_str!("redis/timeout_mark.lua");
const CLOCK: &str = include_str!("redis/clock.lua");

/// Connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The server, or with `cluster` one node to discover the cluster from.
    pub url: String,
    pub key_prefix: String,
    /// Redis Cluster: commands are routed by each channel's hash slot.
    pub cluster: bool,
}

/// The command connection: one server, or a cluster routed by slot.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

struct Scripts {
    publish: Script,
    read: Script,
    timeout_mark: Script,
    clock: Script,
}

struct Slot {
    wake: Arc<Wake>,
    cache: tokio::sync::Mutex<Cache>,
    /// Set after a reconnect: notifications may have been missed.
    stale: AtomicBool,
}

pub struct RedisBroker {
    client: redis::Client,
    settings: RedisSettings,
    conn: ArcSwapOption<Conn>,
    subscribed: AtomicBool,
    /// Counts subscriptions: a view of a channel read under an earlier one
    /// may have missed announcements (`Subscription::head`).
    generation: AtomicU64,
    scripts: Scripts,
    slots: Sharded<ChannelName, Arc<Slot>>,
    relays: Relays,
}

impl RedisBroker {
    /// # Errors
    /// When the URL is not a Redis URL.
    pub fn new(
        settings: RedisSettings,
        relays: Relays,
    ) -> Result<Arc<RedisBroker>, redis::RedisError> {
        let client = redis::Client::open(settings.url.as_str())?;
        Ok(Arc::new(RedisBroker {
            client,
            settings,
            conn: ArcSwapOption::empty(),
            subscribed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            scripts: Scripts {
                publish: Script::new(&format!("{COMMON}{PUBLISH}")),
                read: Script::new(&format!("{COMMON}{READ}")),
                timeout_mark: Script::new(&format!("{COMMON}{TIMEOUT_MARK}")),
                clock: Script::new(&format!("{COMMON}{CLOCK}")),
            },
            slots: Sharded::new(),
            relays,
        }))
    }

    pub fn relays(&self) -> &Relays {
        &self.relays
    }

    fn keys(&self, channel: &ChannelName) -> (String, String) {
        let p = &self.settings.key_prefix;
        (format!("{p}{{{channel}}}:s"), format!("{p}{{{channel}}}:m"))
    }

    fn notify_channel(&self) -> String {
        format!("{}notify", self.settings.key_prefix)
    }

    pub fn is_ready(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.conn.load().is_some()
    }

    fn conn(&self) -> Result<Conn, BrokerError> {
        self.conn
            .load_full()
            .map(|c| (*c).clone())
            .ok_or(BrokerError::Unavailable)
    }

    /// Runs a script with a hard deadline: a broker that does not answer is
    /// unavailable, never a hang.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let call = async {
            match self.conn()? {
                Conn::Single(mut c) => Ok(invocation.invoke_async(&mut c).await),
                Conn::Cluster(mut c) => Ok(invocation.invoke_async(&mut c).await),
            }
        };
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => {
                warn!(error = %e, "redis command failed");
                Err(BrokerError::Unavailable)
            }
            Ok(Err(unavailable)) => Err(unavailable),
            Err(_) => {
                warn!("redis command timed out");
                Err(BrokerError::Unavailable)
            }
        }
    }

    /// Redis's clock: the one that stamps messages.
    pub async fn now(&self) -> Result<Timestamp, BrokerError> {
        let us: String = self.invoke(self.scripts.clock.prepare_invoke()).await?;
        us.parse()
            .map(Timestamp)
            .map_err(|_| BrokerError::Unavailable)
    }

    fn ttl_secs(buffer: BufferConfig) -> u64 {
        // Idle history outlives its messages a little, so a returning client
        // is told "gap" rather than finding a fresh, empty channel.
        buffer
            .max_age
            .saturating_mul(REDIS_IDLE_TTL_FACTOR)
            .max(REDIS_IDLE_TTL_MIN)
            .as_secs()
    }

    pub async fn publish(
        &self,
        items: &[(ChannelName, Prepared)],
        buffer: BufferConfig,
    ) -> Result<Vec<Published>, BrokerError> {
        // Fail fast while disconnected: a 503 now beats a false 200 later.
        if !self.is_ready() {
            return Err(BrokerError::Unavailable);
        }
        let mut out = Vec::with_capacity(items.len());
        let max_age_us = u64::try_from(buffer.max_age.as_micros()).unwrap_or(u64::MAX);
        for (channel, prepared) in items {
            let id = Uuid::new_v4();
            let (stream, meta) = self.keys(channel);
            let mut inv = self.scripts.publish.prepare_invoke();
            inv.key(&stream)
                .key(&meta)
                .arg(id.hyphenated().to_string())
                .arg(prepared.members().as_ref())
                .arg(buffer.max_size)
                .arg(max_age_us)
                .arg(Self::ttl_secs(buffer))
                .arg(self.notify_channel())
                .arg(channel.as_str());
            let ts: String = self.invoke(inv).await?;
            let timestamp = Timestamp(ts.parse().map_err(|_| BrokerError::Unavailable)?);
            let waiters = self
                .slots
                .shard(channel)
                .lock()
                .get(channel)
                .map_or(0, |slot| {
                    slot.wake.note(timestamp);
                    slot.wake.receiver_count()
                });
            out.push(Published {
                channel: channel.clone(),
                id,
                timestamp,
                waiters,
            });
        }
        Ok(out)
    }

    pub fn subscribe(self: &Arc<Self>, channel: &ChannelName) -> Subscription {
        let (slot, rx) = {
            let mut map = self.slots.shard(channel).lock();
            let slot = map
                .entry(channel.clone())
                .or_insert_with(|| {
                    Arc::new(Slot {
                        wake: Wake::new(&self.relays, Timestamp(0)),
                        cache: tokio::sync::Mutex::default(),
                        stale: AtomicBool::new(false),
                    })
                })
                .clone();
            let rx = slot.wake.subscribe();
            (slot, rx)
        };
        Subscription {
            broker: self.clone(),
            channel: channel.clone(),
            slot,
            rx: Some(rx),
        }
    }

    fn release(&self, channel: &ChannelName) {
        let mut map = self.slots.shard(channel).lock();
        if map
            .get(channel)
            .is_some_and(|s| s.wake.receiver_count() == 0)
        {
            map.remove(channel);
        }
    }

    /// Wakes the local waiters of `channel` (a notification arrived).
    fn wake(&self, channel: &ChannelName, ts: Timestamp) {
        if let Some(slot) = self.slots.shard(channel).lock().get(channel) {
            slot.wake.bump(&self.relays, ts);
        }
    }

    /// Wakes every local waiter: after a reconnect, notifications may have
    /// been missed, so each re-checks the history.
    fn wake_all(&self) {
        for shard in self.slots.iter() {
            for slot in shard.lock().values() {
                slot.stale.store(true, Ordering::Release);
                slot.wake.bump(&self.relays, slot.wake.latest());
            }
        }
    }

    pub fn totals(&self) -> (usize, usize) {
        let channels = self.slots.iter().map(|s| s.lock().len()).sum();
        (channels, 0)
    }

    /// Up to `limit` channels with local waiters whose names contain
    /// `matching`, most waiters first.
    pub fn channels(
        &self,
        limit: usize,
        matching: &str,
    ) -> (Vec<(ChannelName, ChannelInfo)>, usize) {
        let names: Vec<ChannelName> = self
            .slots
            .iter()
            .flat_map(|s| {
                s.lock()
                    .keys()
                    .filter(|n| n.matches(matching))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut out: Vec<_> = names
            .into_iter()
            .filter_map(|n| self.info(&n).map(|i| (n, i)))
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.1.waiters));
        let matched = out.len();
        out.truncate(limit);
        (out, matched)
    }

    pub fn info(&self, channel: &ChannelName) -> Option<ChannelInfo> {
        let slot = self.slots.get(channel)?;
        let cache = slot.cache.try_lock().ok();
        Some(ChannelInfo {
            waiters: slot.wake.receiver_count(),
            buffered: cache.as_ref().map_or(0, |c| c.messages.len()),
            last_timestamp: cache.and_then(|c| c.messages.back().map(|m| m.timestamp)),
        })
    }

    /// Keeps the command connection and the notification subscription up
    /// until `shutdown`, reconnecting with backoff; logs every state change.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = REDIS_BACKOFF_MIN;
        loop {
            match self.connect().await {
                Ok(pubsub) => {
                    backoff = REDIS_BACKOFF_MIN;
                    // Before anyone can see the broker ready again: no view
                    // read before the outage passes for current.
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    self.subscribed.store(true, Ordering::Release);
                    info!(url = %redact(&self.settings.url), "redis broker connected");
                    self.wake_all();
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            msg = messages.next() => match msg {
                                Some(msg) => self.on_notification(msg.get_payload_bytes()),
                                None => break,
                            },
                        }
                    }
                    self.subscribed.store(false, Ordering::Release);
                    warn!("redis broker connection lost; reconnecting");
                }
                Err(e) => {
                    self.subscribed.store(false, Ordering::Release);
                    warn!(error = %e, retry_in = ?backoff, "redis broker unavailable");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(REDIS_BACKOFF_MAX);
        }
    }

    async fn connect(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        let connect = async {
            // A fresh command connection with every subscription: the old one
            // died with the server, and would fail its next command.
            self.conn.store(None);
            let conn = if self.settings.cluster {
                let client =
                    redis::cluster::ClusterClient::builder(vec![self.settings.url.as_str()])
                        .connection_timeout(REDIS_TIMEOUT)
                        .response_timeout(REDIS_TIMEOUT)
                        .retries(1)
                        .build()?;
                Conn::Cluster(client.get_async_connection().await?)
            } else {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT)
                    .set_number_of_retries(1);
                Conn::Single(ConnectionManager::new_with_config(self.client.clone(), config).await?)
            };
            self.conn.store(Some(Arc::new(conn)));
            // In a cluster, a classic PUBLISH reaches subscribers on every
            // node, so one subscription to the seed node hears every channel.
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(self.notify_channel()).await?;
            Ok(pubsub)
        };
        match tokio::time::timeout(REDIS_CONNECT_TIMEOUT, connect).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "connect timed out",
            ))),
        }
    }

    fn on_notification(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let Some((name, ts)) = text.rsplit_once(' ') else {
            return;
        };
        let (Ok(channel), Ok(ts)) = (ChannelName::parse(name), ts.parse::<u64>()) else {
            return;
        };
        self.wake(&channel, Timestamp(ts));
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
