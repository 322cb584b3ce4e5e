//! The poll answers' JSON bodies, as pieces that share the buffered
//! messages' bytes (see `answer::Frames`): a single message without a gap is
//! the body rendered once at publish time; a batch is the messages' `data`
//! between a rendered prefix and suffix, never copied into one buffer here.

use std::sync::Arc;

use bytes::Bytes;

use crate::broker::{Message, Timestamp};

/// `{"status":"message","data":{...},"timestamp":T}` (+ `"gap":true`):
/// one piece, or three with the gap.
pub fn single(message: &Message, gap: bool) -> [Bytes; 3] {
    if !gap {
        return [message.single.clone(), Bytes::new(), Bytes::new()];
    }
    [
        Bytes::from_static(b"{\"status\":\"message\",\"data\":"),
        message.data.clone(),
        Bytes::from(format!(
            ",\"timestamp\":{},\"gap\":true}}",
            message.timestamp
        )),
    ]
}

/// `{"status":"messages","messages":[...],"count":n,"timestamp":T_last}`.
pub fn batch(messages: &[Arc<Message>], gap: bool) -> Vec<Bytes> {
    let mut pieces = Vec::with_capacity(2 * messages.len() + 1);
    pieces.push(Bytes::from_static(
        b"{\"status\":\"messages\",\"messages\":[",
    ));
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            pieces.push(Bytes::from_static(b","));
        }
        pieces.push(m.data.clone());
    }
    let last = messages.last().map(|m| m.timestamp).unwrap_or_default();
    let gap = if gap { ",\"gap\":true" } else { "" };
    pieces.push(Bytes::from(format!(
        "],\"count\":{},\"timestamp\":{last}{gap}}}",
        messages.len()
    )));
    pieces
}

/// The longest run of `messages`, from the first, whose data fits in
/// `max_bytes`; never empty when `messages` is not (one message is always
/// sent, whatever its size, or the client could never get past it).
pub fn fitting(messages: &[Arc<Message>], max_bytes: usize) -> &[Arc<Message>] {
    let mut total = 0usize;
    let fit = messages
        .iter()
        .take_while(|m| {
            total = total.saturating_add(m.data.len());
            total <= max_bytes
        })
        .count();
    &messages[..fit.max(1).min(messages.len())]
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

    fn parse(pieces: &[Bytes]) -> Value {
        serde_json::from_slice(&pieces.concat()).unwrap()
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
            parse(&[timeout(Timestamp(1_500_000), false)]),
            json!({"status":"timeout","timestamp":1.5})
        );
        assert_eq!(parse(&[timeout(Timestamp(1), true)])["gap"], true);
    }

    #[test]
    fn a_batch_stops_before_the_message_that_would_pass_the_byte_bound() {
        let m: Vec<_> = (1..=4).map(|i| message(i * 1_000_000)).collect();
        let one = m[0].data.len();
        assert_eq!(fitting(&m, 2 * one).len(), 2);
        assert_eq!(fitting(&m, 2 * one - 1).len(), 1);
        assert_eq!(fitting(&m, 1).len(), 1, "one message is always sent");
        assert_eq!(fitting(&m, usize::MAX).len(), 4);
        assert!(fitting(&[], 10).is_empty());
        let body = parse(&batch(fitting(&m, 2 * one), false));
        assert_eq!(body["count"], 2);
        assert_eq!(
            body["timestamp"], 2.0,
            "the cursor of the last message sent"
        );
    }
}
