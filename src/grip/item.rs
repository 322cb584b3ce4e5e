//! Published GRIP items: checked on the way in (EPCP publish), stored as an
//! ordinary message, and read back by the holds they reach.
//!
//! Stored form: a message whose data is `{"id", "timestamp", "grip": {"id",
//! "prev-id", "formats": {...}}}`, the formats exactly as published. So a
//! native `/api/poll/` poller on the same channel receives the item whole,
//! and the Redis broker carries it between instances with nothing new.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::format::{FormatError, ResponseSpec, StreamSpec};
use crate::broker::{ChannelName, Message, Prepared};
use crate::defaults::GRIP_ID_MAX;

/// The formats a GRIP item may carry (`ws-message` is kept, for native
/// pollers, but no hold here delivers it).
const FORMATS: [&str; 3] = ["http-response", "http-stream", "ws-message"];

/// One item of an EPCP publish, ready for the broker.
#[derive(Debug)]
pub struct Publish {
    pub channel: ChannelName,
    /// The publisher's id: dropped as a duplicate when seen within a minute.
    pub id: Option<String>,
    pub prepared: Prepared,
}

/// A published item as a hold sees it.
#[derive(Debug, Default)]
pub struct Item {
    pub id: Option<String>,
    pub response: Option<ResponseSpec>,
    pub stream: Option<StreamSpec>,
}

/// What a message on a held channel is to a GRIP hold.
#[derive(Debug)]
pub enum Delivery {
    /// Published through `/publish/` as a GRIP item.
    Grip(Arc<Item>),
    /// Published by pollgate's own API: delivered as a native poll would.
    Native,
}

impl Publish {
    /// One element of `items`.
    ///
    /// # Errors
    /// What is missing or malformed, by field name.
    pub fn parse(value: &Value) -> Result<Publish, FormatError> {
        let item = value
            .as_object()
            .ok_or_else(|| FormatError("an item must be an object".into()))?;
        let channel = match item.get("channel") {
            Some(Value::String(c)) => {
                ChannelName::parse(c).map_err(|e| FormatError(format!("channel: {e}")))?
            }
            _ => return Err(FormatError("channel is missing or not a string".into())),
        };
        let id = text(item, "id")?;
        let prev_id = text(item, "prev-id")?;
        for (key, value) in [("id", &id), ("prev-id", &prev_id)] {
            if value.as_ref().is_some_and(|v| v.len() > GRIP_ID_MAX) {
                return Err(FormatError(format!(
                    "{key} is longer than {GRIP_ID_MAX} bytes"
                )));
            }
        }
        // Pushpin reads the formats under "formats" or on the item itself.
        let holder = match item.get("formats") {
            Some(Value::Object(f)) => f,
            Some(_) => return Err(FormatError("formats must be an object".into())),
            None => item,
        };
        let mut formats = Map::new();
        for name in FORMATS {
            if let Some(f) = holder.get(name) {
                formats.insert(name.to_owned(), f.clone());
            }
        }
        if formats.is_empty() {
            return Err(FormatError("no formats specified".into()));
        }
        // Checked now, so a bad item is refused, not found broken by a hold.
        Item::from_formats(id.clone(), &formats)?;
        let mut grip = Map::new();
        if let Some(id) = &id {
            grip.insert("id".into(), Value::String(id.clone()));
        }
        if let Some(prev) = prev_id {
            grip.insert("prev-id".into(), Value::String(prev));
        }
        grip.insert("formats".into(), Value::Object(formats));
        let mut data = Map::new();
        data.insert("grip".into(), Value::Object(grip));
        let prepared =
            Prepared::from_value(Value::Object(data)).map_err(|e| FormatError(e.to_string()))?;
        Ok(Publish {
            channel,
            id,
            prepared,
        })
    }
}

impl Item {
    fn from_formats(id: Option<String>, formats: &Map<String, Value>) -> Result<Item, FormatError> {
        let within = |name: &str, e: FormatError| FormatError(format!("{name}: {e}"));
        Ok(Item {
            id,
            response: formats
                .get("http-response")
                .map(|v| ResponseSpec::parse(v).map_err(|e| within("http-response", e)))
                .transpose()?,
            stream: formats
                .get("http-stream")
                .map(|v| StreamSpec::parse(v).map_err(|e| within("http-stream", e)))
                .transpose()?,
        })
    }

    /// The GRIP item `message` carries, read once per message and shared by
    /// every hold it reaches.
    pub fn of(message: &Message) -> Delivery {
        let derived = message.derived.get_or_init(|| {
            let item = Item::decode(&message.data).map(Arc::new);
            Arc::new(item) as Arc<dyn std::any::Any + Send + Sync>
        });
        match derived.downcast_ref::<Option<Arc<Item>>>() {
            Some(Some(item)) => Delivery::Grip(item.clone()),
            _ => Delivery::Native,
        }
    }

    /// `None` for a native message (a `grip` member that is not a valid
    /// item, from a native publisher, stays native too).
    fn decode(data: &[u8]) -> Option<Item> {
        let value: Value = serde_json::from_slice(data).ok()?;
        let grip = value.get("grip")?.as_object()?;
        let formats = grip.get("formats")?.as_object()?;
        let id = grip.get("id").and_then(Value::as_str).map(str::to_owned);
        Item::from_formats(id, formats).ok()
    }
}

fn text(item: &Map<String, Value>, key: &str) -> Result<Option<String>, FormatError> {
    match item.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FormatError(format!("{key} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Timestamp;
    use serde_json::json;

    fn stored(item: Value) -> Message {
        let p = Publish::parse(&item).unwrap();
        Message::new(uuid::Uuid::nil(), Timestamp(1), &p.prepared)
    }

    #[test]
    fn formats_are_read_under_formats_or_on_the_item() {
        for item in [
            json!({"channel": "a", "id": "1", "formats": {"http-stream": {"content": "x"}}}),
            json!({"channel": "a", "id": "1", "http-stream": {"content": "x"}}),
        ] {
            let Delivery::Grip(got) = Item::of(&stored(item)) else {
                panic!("not a GRIP item");
            };
            assert_eq!(got.id.as_deref(), Some("1"));
            assert_eq!(&got.stream.as_ref().unwrap().content[..], b"x");
            assert!(got.response.is_none());
        }
    }

    #[test]
    fn a_native_poller_sees_the_item_whole() {
        let m = stored(json!({"channel": "a", "id": "7", "prev-id": "6",
            "formats": {"http-response": {"body": "hi"}}}));
        let data: Value = serde_json::from_slice(&m.data).unwrap();
        assert_eq!(
            data["grip"],
            json!({"id": "7", "prev-id": "6", "formats": {"http-response": {"body": "hi"}}})
        );
    }

    #[test]
    fn native_messages_stay_native() {
        let p = Prepared::from_json(br#"{"text":"hi","grip":"not an item"}"#).unwrap();
        let m = Message::new(uuid::Uuid::nil(), Timestamp(1), &p);
        assert!(matches!(Item::of(&m), Delivery::Native));
    }

    #[test]
    fn bad_items_are_refused_with_the_reason() {
        for (item, says) in [
            (json!({"id": "1", "http-stream": {}}), "channel"),
            (json!({"channel": "a b", "http-stream": {}}), "channel"),
            (json!({"channel": "a"}), "no formats"),
            (
                json!({"channel": "a", "id": 5, "http-stream": {}}),
                "id must be",
            ),
            (
                json!({"channel": "a", "http-response": {"code": "x"}}),
                "http-response: code",
            ),
            (json!([1]), "object"),
        ] {
            let e = Publish::parse(&item).unwrap_err();
            assert!(e.0.contains(says), "{item}: {e}");
        }
    }
}
