//! The broker's value types: channel names, timestamps (the cursor), and
//! messages with their wire form rendered once.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::defaults::CHANNEL_NAME_MAX;

/// A valid channel name: 1..=200 of `A-Z a-z 0-9 _ - . : @`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// Why a string is not a channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {CHANNEL_NAME_MAX} characters")]
    TooLong,
    #[error("channel name may contain only A-Z a-z 0-9 _ - . : @")]
    BadCharacter,
    #[error("channel name is not valid percent-encoded UTF-8")]
    Encoding,
}

impl ChannelName {
    /// # Errors
    /// When `name` breaks the rule above.
    pub fn parse(name: &str) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > CHANNEL_NAME_MAX {
            return Err(ChannelNameError::TooLong);
        }
        let ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'));
        if !ok {
            return Err(ChannelNameError::BadCharacter);
        }
        Ok(ChannelName(Arc::from(name)))
    }

    /// A channel as it appears in a URL path: percent-decoded, then checked.
    ///
    /// # Errors
    /// [`ChannelNameError::Encoding`] for bad percent-encoding or non-UTF-8,
    /// else as [`ChannelName::parse`].
    pub fn from_path(segment: &str) -> Result<Self, ChannelNameError> {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| ChannelNameError::Encoding)?;
        ChannelName::parse(&decoded)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name contains `part`, ignoring case (names are ASCII):
    /// the status page's filter.
    pub fn matches(&self, part: &str) -> bool {
        part.is_empty()
            || self
                .0
                .as_bytes()
                .windows(part.len())
                .any(|w| w.eq_ignore_ascii_case(part.as_bytes()))
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Microseconds since the Unix epoch. On the wire it is float seconds with
/// six decimals, so every value round-trips exactly through a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The wall clock now. A clock before 1970 reads as 0.
    pub fn now() -> Timestamp {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        Timestamp(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// The next timestamp for a channel whose newest is `last`: the wall
    /// clock, but always strictly after `last` (two publishes in the same
    /// microsecond, or a clock stepped back, still order correctly).
    pub fn mint(last: Timestamp) -> Timestamp {
        Timestamp::now().max(Timestamp(last.0.saturating_add(1)))
    }

    /// Whole seconds since the epoch.
    pub fn secs(self) -> i64 {
        i64::try_from(self.0 / 1_000_000).unwrap_or(i64::MAX)
    }

    /// From float seconds as a client sends them; `None` when negative or not finite.
    pub fn from_secs_f64(secs: f64) -> Option<Timestamp> {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        let micros = (secs * 1e6).round();
        // Values beyond u64 microseconds (year 586,000) are nonsense, not cursors.
        (micros < 1.8e19).then_some(Timestamp(micros as u64))
    }

    pub fn saturating_add(self, d: std::time::Duration) -> Timestamp {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(micros))
    }

    pub fn saturating_sub(self, d: std::time::Duration) -> Timestamp {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(micros))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// A published JSON object, checked and serialized, waiting for its id and
/// timestamp. Built outside any lock.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The object's members without braces, `id` and `timestamp` removed
    /// (pollgate sets those); empty for `{}`.
    members: Bytes,
}

/// Why a publish body is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body must be a JSON object")]
    NotObject,
}

impl Prepared {
    /// # Errors
    /// When `body` is not a JSON object.
    pub fn from_json(body: &[u8]) -> Result<Prepared, PrepareError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| PrepareError::NotJson(e.to_string()))?;
        Prepared::from_value(value)
    }

    /// # Errors
    /// When `value` is not an object.
    pub fn from_value(value: serde_json::Value) -> Result<Prepared, PrepareError> {
        let serde_json::Value::Object(mut map) = value else {
            return Err(PrepareError::NotObject);
        };
        map.remove("id");
        map.remove("timestamp");
        let text = serde_json::Value::Object(map).to_string();
        // `text` is "{...}"; keep what is between the braces.
        let inner = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or_default();
        Ok(Prepared {
            members: Bytes::copy_from_slice(inner.as_bytes()),
        })
    }

    /// The members as stored, for brokers that keep them elsewhere (Redis).
    pub fn members(&self) -> &Bytes {
        &self.members
    }

    pub fn from_members(members: Bytes) -> Prepared {
        Prepared { members }
    }
}

/// One message on a channel, shared by every waiter that receives it.
#[derive(Debug)]
pub struct Message {
    pub id: Uuid,
    pub timestamp: Timestamp,
    /// `data` as sent to clients: the published object plus `id` and `timestamp`.
    pub data: Bytes,
    /// The whole single-message answer, rendered once per publish, so a
    /// fan-out to N waiters costs N refcount bumps, not N serializations.
    pub single: Bytes,
    /// What a transport reads out of `data` (GRIP's item), derived on first
    /// use and shared by every waiter, like `single`.
    pub derived: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// The message as one Server-Sent Event, rendered on first use and
    /// shared by every stream it goes to (like `single`).
    pub event: std::sync::OnceLock<Bytes>,
    /// Its share of [`held_bytes`], given back when the last holder lets go.
    _held: Held,
}

/// Bytes of message bodies held in memory now (every history, cache and
/// answer that keeps a message): what the allocator is asked to give back
/// after a publish-heavy peak (see `memory`).
pub fn held_bytes() -> usize {
    HELD_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

static HELD_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A message's count in [`held_bytes`].
#[derive(Debug)]
struct Held(usize);

impl Held {
    fn new(n: usize) -> Held {
        HELD_BYTES.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Held(n)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD_BYTES.fetch_sub(self.0, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Message {
    pub fn new(id: Uuid, timestamp: Timestamp, prepared: &Prepared) -> Message {
        let mut data = BytesMut::with_capacity(prepared.members.len() + 80);
        data.put_slice(b"{\"id\":\"");
        data.put_slice(id.hyphenated().to_string().as_bytes());
        data.put_slice(b"\",\"timestamp\":");
        data.put_slice(timestamp.to_string().as_bytes());
        if !prepared.members.is_empty() {
            data.put_u8(b',');
            data.put_slice(&prepared.members);
        }
        data.put_u8(b'}');
        let data = data.freeze();
        let stamp = timestamp.to_string();
        let mut single = BytesMut::with_capacity(data.len() + 2 * stamp.len() + 48);
        single.put_slice(b"{\"status\":\"message\",\"data\":");
        single.put_slice(&data);
        single.put_slice(b",\"timestamp\":");
        single.put_slice(stamp.as_bytes());
        single.put_u8(b'}');
        let single = single.freeze();
        Message {
            _held: Held::new(data.len() + single.len()),
            id,
            timestamp,
            data,
            single,
            derived: std::sync::OnceLock::new(),
            event: std::sync::OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_matches_a_part_of_it_in_any_case() {
        let name = ChannelName::parse("Weather.eu").unwrap();
        for part in ["", "weather", "EAT", "r.E", "Weather.eu"] {
            assert!(name.matches(part), "{part}");
        }
        for part in ["weathers", "x", "Weather.eu."] {
            assert!(!name.matches(part), "{part}");
        }
    }

    #[test]
    fn channel_names_follow_the_contract() {
        for ok in ["a", "news", "user:42@eu.west_1-x", &"x".repeat(200)] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(ChannelName::parse(""), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::parse(&"x".repeat(201)),
            Err(ChannelNameError::TooLong)
        );
        for bad in ["a/b", "a b", "é", "a%2F", "a?b"] {
            assert_eq!(
                ChannelName::parse(bad),
                Err(ChannelNameError::BadCharacter),
                "{bad}"
            );
        }
    }

    #[test]
    fn timestamps_round_trip_through_their_wire_form() {
        let t = Timestamp(1_764_420_000_123_456);
        assert_eq!(t.to_string(), "1764420000.123456");
        let back: f64 = t.to_string().parse().unwrap();
        assert_eq!(Timestamp::from_secs_f64(back), Some(t));
        assert_eq!(Timestamp(5).to_string(), "0.000005");
    }

    #[test]
    fn minting_is_strictly_increasing_even_in_one_microsecond() {
        let far = Timestamp(u64::MAX / 2);
        assert_eq!(Timestamp::mint(far), Timestamp(far.0 + 1));
        let a = Timestamp::mint(Timestamp(0));
        let b = Timestamp::mint(a);
        assert!(b > a);
    }

    #[test]
    fn bad_cursor_floats_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            assert_eq!(Timestamp::from_secs_f64(bad), None, "{bad}");
        }
        assert_eq!(Timestamp::from_secs_f64(0.0), Some(Timestamp(0)));
    }

    #[test]
    fn data_gets_id_and_timestamp_and_loses_client_supplied_ones() {
        let p = Prepared::from_json(br#"{"text":"hi","id":"forged","timestamp":1}"#).unwrap();
        let id = Uuid::nil();
        let m = Message::new(id, Timestamp(1_000_000), &p);
        let data: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"id": id.to_string(), "timestamp": 1.0, "text": "hi"})
        );
        let single: serde_json::Value = serde_json::from_slice(&m.single).unwrap();
        assert_eq!(single["status"], "message");
        assert_eq!(single["data"], data);
        assert_eq!(single["timestamp"], 1.0);
    }

    #[test]
    fn empty_objects_and_non_objects() {
        let m = Message::new(
            Uuid::nil(),
            Timestamp(1),
            &Prepared::from_json(b"{}").unwrap(),
        );
        assert!(serde_json::from_slice::<serde_json::Value>(&m.data).is_ok());
        assert_eq!(
            Prepared::from_json(b"[1]").unwrap_err(),
            PrepareError::NotObject
        );
        assert!(matches!(
            Prepared::from_json(b"{"),
            Err(PrepareError::NotJson(_))
        ));
    }
}
