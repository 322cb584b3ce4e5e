//! GRIP's JSON shapes shared by the app's instructions and published items:
//! an HTTP response (`code`, `reason`, `headers`, `body` | `body-bin`) and
//! a stream chunk (`content` | `content-bin`, `action`).

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use serde_json::{Map, Value};

/// Why a GRIP JSON value is not what it must be; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

fn bad(what: impl Into<String>) -> FormatError {
    FormatError(what.into())
}

/// What a published item asks of the holds it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Deliver this content.
    Send,
    /// No content: ask the app again (response holds).
    Hint,
    /// End the stream (after this item's content, if any).
    Close,
}

/// A complete HTTP response as GRIP describes one.
#[derive(Debug, Clone)]
pub struct ResponseSpec {
    pub action: Action,
    pub status: StatusCode,
    /// Sent as the HTTP/1 reason phrase when it differs from the standard one.
    pub reason: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One chunk for stream holds.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub action: Action,
    pub content: Bytes,
}

impl ResponseSpec {
    /// # Errors
    /// A field of the wrong type, a bad status, header or base64.
    pub fn parse(value: &Value) -> Result<ResponseSpec, FormatError> {
        let obj = object(value, "http-response")?;
        let action = action(obj)?;
        let status = match obj.get("code") {
            None | Some(Value::Null) => StatusCode::OK,
            Some(code) => code
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| bad("code must be an HTTP status from 100 to 999"))?,
        };
        let reason = match obj.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(r.clone()),
            Some(_) => return Err(bad("reason must be a string")),
        };
        Ok(ResponseSpec {
            action,
            status,
            reason,
            headers: headers(obj.get("headers"))?,
            body: content(obj, "body", "body-bin")?,
        })
    }
}

impl StreamSpec {
    /// # Errors
    /// A field of the wrong type or bad base64.
    pub fn parse(value: &Value) -> Result<StreamSpec, FormatError> {
        let obj = object(value, "http-stream")?;
        Ok(StreamSpec {
            action: action(obj)?,
            content: content(obj, "content", "content-bin")?,
        })
    }
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, FormatError> {
    value
        .as_object()
        .ok_or_else(|| bad(format!("{what} must be an object")))
}

fn action(obj: &Map<String, Value>) -> Result<Action, FormatError> {
    match obj.get("action").map(Value::as_str) {
        None | Some(Some("send")) => Ok(Action::Send),
        Some(Some("hint")) => Ok(Action::Hint),
        Some(Some("close")) => Ok(Action::Close),
        Some(_) => Err(bad("action must be \"send\", \"hint\" or \"close\"")),
    }
}

/// `text` (UTF-8) or `bin` (base64); neither is empty content.
fn content(obj: &Map<String, Value>, text: &str, bin: &str) -> Result<Bytes, FormatError> {
    match (obj.get(text), obj.get(bin)) {
        (Some(Value::String(s)), None) => Ok(Bytes::copy_from_slice(s.as_bytes())),
        (None, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Bytes::from)
            .map_err(|e| bad(format!("{bin} is not base64: {e}"))),
        (None, None) => Ok(Bytes::new()),
        (Some(_), Some(_)) => Err(bad(format!("give {text} or {bin}, not both"))),
        (Some(_), None) | (None, Some(_)) => Err(bad(format!("{text} / {bin} must be a string"))),
    }
}

/// Headers that describe one hop's framing, not the answer: pollgate frames
/// what it sends itself, so any of these from the app or a publisher is
/// dropped (a `Transfer-Encoding` in an HTTP/2 answer would break it).
pub fn is_framing(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "content-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
    )
}

/// A header value in an allocation of its own. A value parsed by hyper
/// shares the connection's whole read buffer: a held request that kept one
/// would keep that buffer (measured: 8 KiB and more per hold).
pub fn owned(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(value.as_bytes()))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// `{"Name": "value"}` or `[["Name", "value"], ...]` (repeatable names);
/// framing headers and `Grip-*` are dropped.
pub fn headers(value: Option<&Value>) -> Result<HeaderMap, FormatError> {
    let mut out = HeaderMap::new();
    let mut add = |name: &str, value: &Value| -> Result<(), FormatError> {
        let value = value
            .as_str()
            .ok_or_else(|| bad(format!("header {name:?} must be a string")))?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("{name:?} is not a header name")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| bad(format!("header {name} has a value that cannot be sent")))?;
        if !is_framing(&name) && !name.as_str().starts_with("grip-") {
            out.append(name, value);
        }
        Ok(())
    };
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                add(name, value)?;
            }
        }
        Some(Value::Array(list)) => {
            for pair in list {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), value]) => add(name, value)?,
                    _ => return Err(bad("headers as a list must be [[name, value], ...]")),
                }
            }
        }
        Some(_) => return Err(bad("headers must be an object or a list of pairs")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_response_has_defaults_and_both_header_forms() {
        let r = ResponseSpec::parse(&json!({"body": "hi"})).unwrap();
        assert_eq!(
            (r.status, r.action, &r.body[..]),
            (StatusCode::OK, Action::Send, &b"hi"[..])
        );
        let r = ResponseSpec::parse(&json!({
            "code": 404, "reason": "Gone Fishing",
            "headers": [["X-A", "1"], ["X-A", "2"]], "body-bin": "AAE="
        }))
        .unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.reason.as_deref(), Some("Gone Fishing"));
        assert_eq!(r.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&r.body[..], &[0u8, 1]);
    }

    #[test]
    fn bad_fields_are_named() {
        for (value, says) in [
            (json!({"code": 42}), "code"),
            (json!({"body": "a", "body-bin": "YQ=="}), "not both"),
            (json!({"body-bin": "!!"}), "base64"),
            (json!({"headers": {"bad name": "x"}}), "header name"),
            (json!({"headers": {"X": "a\nb"}}), "cannot be sent"),
            (json!({"action": "explode"}), "action"),
            (json!("text"), "object"),
        ] {
            let e = ResponseSpec::parse(&value).unwrap_err();
            assert!(e.0.contains(says), "{value}: {e}");
        }
    }

    #[test]
    fn framing_and_grip_headers_from_a_publisher_are_dropped() {
        let r = ResponseSpec::parse(&json!({"headers": {
            "Transfer-Encoding": "chunked", "Connection": "close", "Content-Length": "9",
            "Grip-Hold": "response", "X-Kept": "1"
        }, "body": "x"}))
        .unwrap();
        let names: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn a_stream_chunk_may_close() {
        let s = StreamSpec::parse(&json!({"content": "x\n"})).unwrap();
        assert_eq!((s.action, &s.content[..]), (Action::Send, &b"x\n"[..]));
        let s = StreamSpec::parse(&json!({"action": "close"})).unwrap();
        assert_eq!((s.action, s.content.len()), (Action::Close, 0));
    }
}
