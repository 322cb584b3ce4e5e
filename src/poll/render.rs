//! The poll answers' JSON bodies. A single message without a gap reuses the
//! body rendered once at publish time; the rarer forms are built here.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::broker::{Message, Timestamp};

/// `{"status":"message","data":{...},"timestamp":T}` (+ `"gap":true`).
pub fn single(message: &Message, gap: bool) -> Bytes {
    if !gap {
        return message.single.clone();
    }
    let mut out = BytesMut::with_capacity(message.data.len() + 80);
    out.put_slice(b"{\"status\":\"message\",\"data\":");
    out.put_slice(&message.data);
    out.put_slice(format!(",\"timestamp\":{},\"gap\":true}}", message.timestamp).as_bytes());
    out.freeze()
}

/// `{"status":"messages","messages":[...],"count":n,"timestamp":T_last}`.
pub fn batch(messages: &[Arc<Message>], gap: bool) -> Bytes {
    let size: usize = messages.iter().map(|m| m.data.len() + 1).sum();
    let mut out = BytesMut::with_capacity(size + 96);
    out.put_slice(b"{\"status\":\"messages\",\"messages\":[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&m.data);
    }
    let last = messages.last().map(|m| m.timestamp).unwrap_or_default();
    out.put_slice(format!("],\"count\":{},\"timestamp\":{last}", messages.len()).as_bytes());
    if gap {
        out.put_slice(b",\"gap\":true");
    }
    out.put_u8(b'}');
    out.freeze()
}

/// `{"status":"timeout","timestamp":T}` (+ `"gap":true` when the cursor was
/// older than the history and nothing is left to send).
pub fn timeout(mark: Timestamp, gap: bool) -> Bytes {
    let gap = if gap { ",\"gap\":true" } else { "" };
    Bytes::from(format!(
        "{{\"status\":\"timeout\",\"timestamp\":{mark}{gap}}}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Prepared;
    use serde_json::{json, Value};

    fn message(ts: u64) -> Arc<Message> {
        let p = Prepared::from_json(br#"{"n":1}"#).unwrap();
        Arc::new(Message::new(uuid::Uuid::nil(), Timestamp(ts), &p))
    }

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn batch_lists_data_and_ends_at_the_last_timestamp() {
        let body = parse(&batch(&[message(1_000_000), message(2_500_000)], false));
        assert_eq!(body["status"], "messages");
        assert_eq!(body["count"], 2);
        assert_eq!(body["timestamp"], 2.5);
        assert_eq!(body["messages"][1]["n"], 1);
        assert!(body.get("gap").is_none());
        assert_eq!(parse(&batch(&[message(1)], true))["gap"], true);
    }

    #[test]
    fn single_with_gap_keeps_the_message() {
        let body = parse(&single(&message(3_000_000), true));
        assert_eq!(body["status"], "message");
        assert_eq!(body["gap"], true);
        assert_eq!(body["timestamp"], 3.0);
    }

    #[test]
    fn timeout_body() {
        assert_eq!(
            parse(&timeout(Timestamp(1_500_000), false)),
            json!({"status":"timeout","timestamp":1.5})
        );
        assert_eq!(parse(&timeout(Timestamp(1), true))["gap"], true);
    }
}
