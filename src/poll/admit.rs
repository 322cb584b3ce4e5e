//! Limits on held polls, as RAII permits: a slot is taken before a poll is
//! held and given back when its [`Permit`] drops, whatever ended the poll
//! (message, timeout, client gone, shutdown). No counter is ever decremented
//! by hand.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::broker::ChannelName;
use crate::sharded::Sharded;

/// Caps on held polls, checked before a poll is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_per_client: usize,
    /// Per client address, whatever client id the polls carry.
    pub max_per_address: usize,
    pub max_per_channel: usize,
    pub max_total: usize,
}

/// Which limit refused a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("too many polls from this client")]
    Client,
    #[error("too many polls from this address")]
    Address,
    #[error("channel at capacity")]
    Channel,
    #[error("server at capacity")]
    Total,
}

impl LimitError {
    /// The `limit` label of `pollgate_poll_limit_refusals_total`.
    pub fn label(self) -> &'static str {
        match self {
            LimitError::Client => "client",
            LimitError::Address => "address",
            LimitError::Channel => "channel",
            LimitError::Total => "total",
        }
    }
}

/// Counts of held polls per client, per address, per channel and in total.
pub struct Admission {
    total: AtomicUsize,
    last_logged: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
    clients: Counts<String>,
    addresses: Counts<IpAddr>,
    channels: Counts<ChannelName>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            total: AtomicUsize::new(0),
            last_logged: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
            clients: Counts::new(),
            addresses: Counts::new(),
            channels: Counts::new(),
        }
    }
}

impl Admission {
    /// Takes a slot for (`client` at `addr`, `channel`) if every limit
    /// allows it.
    ///
    /// # Errors
    /// The first limit that is full; nothing is taken then.
    pub fn admit(
        self: &Arc<Self>,
        client: String,
        addr: IpAddr,
        channel: &ChannelName,
        limits: Limits,
    ) -> Result<Permit, LimitError> {
        // Each step is undone by the guards below if a later one refuses.
        let total = self.total.fetch_add(1, Ordering::AcqRel);
        let total_guard = TotalGuard(self.clone());
        if total >= limits.max_total {
            return Err(LimitError::Total);
        }
        if !self.channels.try_inc(channel, limits.max_per_channel) {
            return Err(LimitError::Channel);
        }
        if !self.addresses.try_inc(&addr, limits.max_per_address) {
            self.channels.dec(channel);
            return Err(LimitError::Address);
        }
        if !self.clients.try_inc(&client, limits.max_per_client) {
            self.addresses.dec(&addr);
            self.channels.dec(channel);
            return Err(LimitError::Client);
        }
        std::mem::forget(total_guard);
        Ok(Permit {
            admission: self.clone(),
            client,
            addr,
            channel: channel.clone(),
        })
    }

    /// Rate-limits the refusal log to one line per second: a burst of 429s
    /// is one line with the count of those not logged.
    pub fn should_log(&self) -> Option<u64> {
        let now = crate::broker::Timestamp::now().0 / 1_000_000;
        let last = self.last_logged.swap(now, Ordering::AcqRel);
        if last == now {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        } else {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        }
    }

    /// Polls held now (admitted and not yet released).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// Gives back the total slot if admission fails after taking it.
struct TotalGuard(Arc<Admission>);

impl Drop for TotalGuard {
    fn drop(&mut self) {
        self.0.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One held poll's slot; dropping it frees the slot.
pub struct Permit {
    admission: Arc<Admission>,
    client: String,
    addr: IpAddr,
    channel: ChannelName,
}

impl Permit {
    /// The client the slot was taken for.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// The channel the slot was taken on.
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.clients.dec(&self.client);
        self.admission.addresses.dec(&self.addr);
        self.admission.channels.dec(&self.channel);
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-key counters; a key at zero is removed, so memory follows the polls
/// held now, not every client ever seen.
struct Counts<K>(Sharded<K, usize>);

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new() -> Self {
        Counts(Sharded::new())
    }

    fn try_inc(&self, key: &K, max: usize) -> bool {
        let mut map = self.0.shard(key).lock();
        // Looked up before inserting: `entry` would clone the key (a client
        // id is a String) on every poll, not just for a new key.
        match map.get_mut(key) {
            Some(n) if *n >= max => false,
            Some(n) => {
                *n += 1;
                true
            }
            None if max == 0 => false,
            None => {
                map.insert(key.clone(), 1);
                true
            }
        }
    }

    fn dec(&self, key: &K) {
        let mut map = self.0.shard(key).lock();
        if let Some(n) = map.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_per_client: 2,
        max_per_address: 3,
        max_per_channel: 3,
        max_total: 4,
    };

    const A1: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const A2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn ch(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    #[test]
    fn each_limit_refuses_and_takes_nothing() {
        let a = Arc::new(Admission::default());
        let p1 = a.admit("c1".into(), A1, &ch("x"), LIMITS).unwrap();
        let _p2 = a.admit("c1".into(), A1, &ch("x"), LIMITS).unwrap();
        assert_eq!(
            a.admit("c1".into(), A1, &ch("y"), LIMITS).err(),
            Some(LimitError::Client)
        );
        let _p3 = a.admit("c2".into(), A1, &ch("x"), LIMITS).unwrap();
        assert_eq!(
            a.admit("c3".into(), A2, &ch("x"), LIMITS).err(),
            Some(LimitError::Channel)
        );
        let _p4 = a.admit("c3".into(), A2, &ch("y"), LIMITS).unwrap();
        assert_eq!(
            a.admit("c4".into(), A2, &ch("z"), LIMITS).err(),
            Some(LimitError::Total)
        );
        assert_eq!(a.total(), 4, "refusals took no slot");
        drop(p1);
        assert_eq!(a.total(), 3);
        a.admit("c1".into(), A1, &ch("z"), LIMITS).unwrap();
    }

    #[test]
    fn an_address_is_capped_whatever_client_ids_it_sends() {
        let a = Arc::new(Admission::default());
        let held: Vec<_> = (0..3)
            .map(|i| {
                a.admit(format!("tab{i}"), A1, &ch(&format!("c{i}")), LIMITS)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            a.admit("tab9".into(), A1, &ch("c9"), LIMITS).err(),
            Some(LimitError::Address)
        );
        assert_eq!(a.total(), 3, "the refusal took no slot");
        a.admit("tab9".into(), A2, &ch("c9"), LIMITS).unwrap();
        drop(held);
    }

    #[test]
    fn released_keys_are_forgotten() {
        let a = Arc::new(Admission::default());
        for i in 0..100 {
            drop(a.admit(format!("c{i}"), A1, &ch("x"), LIMITS).unwrap());
        }
        assert_eq!(a.total(), 0);
        let held: usize = a.clients.0.iter().map(|s| s.lock().len()).sum();
        let addresses: usize = a.addresses.0.iter().map(|s| s.lock().len()).sum();
        assert_eq!((held, addresses), (0, 0));
    }
}
