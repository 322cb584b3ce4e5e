//! The event stream's bytes (the README's wire contract, Server-Sent
//! Events): pure functions, tested here and, end to end, against SSE
//! clients no one here wrote (tests/it/sse.rs).
//!
//! Every event is whole in one chunk, and each chunk ends on a blank line:
//! a stream cut between chunks never leaves a client with half an event.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, ACCEPT};

use crate::broker::{Cursor, Message, Timestamp};

/// A comment line: keeps proxies from cutting an idle stream, dispatches
/// nothing.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Whether the request asks for an event stream: an `Accept` media range
/// that is `text/event-stream` (what `EventSource` sends). `*/*` is not:
/// a client that takes anything gets the long poll it always had.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let (media, params) = match range.split_once(';') {
                Some((m, p)) => (m, p),
                None => (range, ""),
            };
            // `q=0` means "not acceptable" (RFC 9110 12.4.2).
            let refused = params.split(';').any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.trim().eq_ignore_ascii_case("text/event-stream") && !refused
        })
}

/// The stream's first chunk: the reconnect delay, then `event: ready`
/// naming the cursor the stream starts after. The `id:` makes that the
/// browser's `Last-Event-ID` at once, so a stream cut before its first
/// message resumes from the same point, and the JavaScript client learns
/// that the stream really flows (a proxy that buffers it shows nothing).
pub fn opening(retry: Duration, cursor: Cursor) -> Bytes {
    let retry = retry.as_millis();
    Bytes::from(match stamp(cursor) {
        Some(t) => {
            format!("retry: {retry}\nid: {t}\nevent: ready\ndata: {{\"timestamp\":{t}}}\n\n")
        }
        None => format!("retry: {retry}\nevent: ready\ndata: {{}}\n\n"),
    })
}

/// `event: gap`: messages after the stream's start point are gone (trimmed,
/// expired, or the history was lost); the stream continues after `from`.
pub fn gap(from: Timestamp) -> Bytes {
    Bytes::from(format!(
        "id: {from}\nevent: gap\ndata: {{\"gap\":true,\"timestamp\":{from}}}\n\n"
    ))
}

/// One message as an event: `id:` its timestamp cursor, `data:` the object
/// a long poll returns as `data`. Rendered once per message, shared by
/// every stream.
pub fn event(message: &Message) -> Bytes {
    message
        .event
        .get_or_init(|| {
            let stamp = message.timestamp.to_string();
            let mut out = Vec::with_capacity(message.data.len() + stamp.len() + 32);
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(stamp.as_bytes());
            out.extend_from_slice(b"\nevent: message\n");
            data_lines(&mut out, &message.data);
            out.push(b'\n');
            Bytes::from(out)
        })
        .clone()
}

/// Several messages as one chunk (a stream catching up).
pub fn events(messages: &[Arc<Message>]) -> Bytes {
    match messages {
        [one] => event(one),
        many => {
            let parts: Vec<Bytes> = many.iter().map(|m| event(m)).collect();
            Bytes::from(parts.concat())
        }
    }
}

/// `data:` lines for `text`. pollgate's JSON is compact (no raw line
/// breaks), but a line break in it would end the field early: each line of
/// the text gets a `data:` line of its own, which the client joins with
/// `\n` again (any of CR, LF, CRLF ends a line in SSE).
fn data_lines(out: &mut Vec<u8>, text: &[u8]) {
    let mut rest = text;
    loop {
        out.extend_from_slice(b"data: ");
        match memchr::memchr2(b'\n', b'\r', rest) {
            None => {
                out.extend_from_slice(rest);
                out.push(b'\n');
                return;
            }
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                out.push(b'\n');
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
            }
        }
    }
}

/// The cursor as an event id: `since`'s own text (`0` for the oldest).
fn stamp(cursor: Cursor) -> Option<Timestamp> {
    match cursor {
        Cursor::After(t) => Some(t),
        Cursor::Oldest => Some(Timestamp(0)),
        Cursor::AfterId(_) | Cursor::Newest => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Prepared;
    use http::HeaderValue;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_an_accept_naming_event_streams_asks_for_one() {
        assert!(wants_stream(&accept(&["text/event-stream"])));
        assert!(wants_stream(&accept(&["Text/Event-Stream; charset=utf-8"])));
        assert!(wants_stream(&accept(&[
            "application/json, text/event-stream;q=0.5"
        ])));
        assert!(wants_stream(&accept(&[
            "application/json",
            "text/event-stream"
        ])));
        assert!(!wants_stream(&accept(&["*/*"])));
        assert!(!wants_stream(&accept(&["text/*"])));
        assert!(!wants_stream(&accept(&["text/event-stream;q=0"])));
        assert!(!wants_stream(&accept(&["application/json"])));
        assert!(!wants_stream(&HeaderMap::new()));
    }

    #[test]
    fn a_message_is_one_event_with_its_cursor_as_id() {
        let p = Prepared::from_json(br#"{"text":"a\nb"}"#).unwrap();
        let m = Message::new(uuid::Uuid::nil(), Timestamp(1_500_000), &p);
        let text = String::from_utf8(event(&m).to_vec()).unwrap();
        let data = std::str::from_utf8(&m.data).unwrap();
        assert_eq!(
            text,
            format!("id: 1.500000\nevent: message\ndata: {data}\n\n")
        );
        assert!(
            !data.contains('\n'),
            "JSON escapes the line break: one data line"
        );
        assert_eq!(
            event(&m).as_ptr(),
            event(&m).as_ptr(),
            "rendered once, then shared"
        );
    }

    #[test]
    fn line_breaks_in_data_become_data_lines() {
        let mut out = Vec::new();
        data_lines(&mut out, b"a\nb\r\nc\rd");
        assert_eq!(out, b"data: a\ndata: b\ndata: c\ndata: d\n");
    }

    #[test]
    fn the_opening_names_the_start_cursor() {
        let text = opening(Duration::from_secs(2), Cursor::After(Timestamp(3)));
        assert_eq!(
            &text[..],
            b"retry: 2000\nid: 0.000003\nevent: ready\ndata: {\"timestamp\":0.000003}\n\n"
        );
        let oldest = opening(Duration::from_secs(2), Cursor::Oldest);
        assert!(oldest.starts_with(b"retry: 2000\nid: 0.000000\n"));
        let by_id = opening(Duration::from_secs(2), Cursor::AfterId(uuid::Uuid::nil()));
        assert!(!by_id.windows(3).any(|w| w == b"id:"));
    }
}
