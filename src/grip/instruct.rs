//! The app's GRIP instructions, read from its answer: `Grip-*` headers with
//! the body as the response to hold back, or an `application/grip-instruct`
//! JSON body. Parsing only; `hold` acts on the result.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use serde_json::Value;

use super::format::{self, is_framing, FormatError, ResponseSpec};
use crate::broker::ChannelName;
use crate::defaults::{GRIP_KEEP_ALIVE, GRIP_KEEP_ALIVE_MAX_BYTES, GRIP_MAX_CHANNELS};

/// What the app asked for.
#[derive(Debug)]
pub enum Instruction {
    /// Not a GRIP answer: pass it through.
    None,
    /// `application/grip-instruct` without `hold`: answer with its response.
    Respond(ResponseSpec),
    Hold(Hold),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wait for one item (or the timeout), then answer.
    Response,
    /// Answer at once and append items to the open response.
    Stream,
}

#[derive(Debug)]
pub struct Hold {
    pub mode: Mode,
    /// At least one, at most `GRIP_MAX_CHANNELS`, no name twice.
    pub channels: Vec<HoldChannel>,
    /// Seconds the app asked for (`Grip-Timeout`); the route bounds it.
    pub timeout: Option<u64>,
    pub keep_alive: Option<KeepAlive>,
    /// The answer to hold back (response mode) or to start with (stream).
    pub response: ResponseSpec,
}

#[derive(Debug, Clone)]
pub struct HoldChannel {
    pub name: ChannelName,
    /// The id of the last item the app's answer covers.
    pub prev_id: Option<String>,
}

/// Data sent on an idle stream.
#[derive(Debug, Clone)]
pub struct KeepAlive {
    pub data: Bytes,
    pub every: Duration,
    /// `mode=interval`: on a fixed beat, not only when idle.
    pub interval: bool,
}

/// The app's instructions are not valid; the app's fault (502).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InstructError(pub String);

impl From<FormatError> for InstructError {
    fn from(e: FormatError) -> Self {
        InstructError(e.0)
    }
}

fn bad(what: impl Into<String>) -> InstructError {
    InstructError(what.into())
}

const GRIP_INSTRUCT: &str = "application/grip-instruct";

/// Whether an answer carries instructions (so its body must be read).
pub fn is_grip(headers: &HeaderMap) -> bool {
    headers.contains_key("grip-hold") || content_type_is_instruct(headers)
}

fn content_type_is_instruct(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(GRIP_INSTRUCT))
}

/// Reads the instructions of an answer whose body has been read whole.
///
/// # Errors
/// Anything the app got wrong, in words for the log.
pub fn parse(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Instruction, InstructError> {
    if content_type_is_instruct(headers) {
        if status != StatusCode::OK {
            return Err(bad(
                "an application/grip-instruct answer must have status 200",
            ));
        }
        return parse_json(&body);
    }
    let Some(hold) = headers.get("grip-hold") else {
        return Ok(Instruction::None);
    };
    let mode = match hold.to_str().map(str::trim) {
        Ok("response") => Mode::Response,
        Ok("stream") => Mode::Stream,
        _ => return Err(bad("Grip-Hold must be \"response\" or \"stream\"")),
    };
    let mut channels = Vec::new();
    for value in headers.get_all("grip-channel") {
        let value = value
            .to_str()
            .map_err(|_| bad("Grip-Channel is not text"))?;
        for entry in value.split(',').filter(|e| !e.trim().is_empty()) {
            let mut parts = entry.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let name =
                ChannelName::parse(name).map_err(|e| bad(format!("Grip-Channel {name:?}: {e}")))?;
            let mut prev_id = None;
            for (key, value) in parts.filter_map(param) {
                if key.eq_ignore_ascii_case("prev-id") {
                    prev_id = Some(value.to_owned());
                }
            }
            channels.push(HoldChannel { name, prev_id });
        }
    }
    let timeout = match headers.get("grip-timeout") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("Grip-Timeout must be whole seconds"))?,
        ),
    };
    let keep_alive = headers
        .get("grip-keep-alive")
        .map(keep_alive_header)
        .transpose()?;
    let (status, reason) = match headers.get("grip-status") {
        None => (status, None),
        Some(v) => grip_status(v)?,
    };
    let response = ResponseSpec {
        action: format::Action::Send,
        status,
        reason,
        headers: exposed(headers)?,
        body,
    };
    checked(Hold {
        mode,
        channels,
        timeout,
        keep_alive,
        response,
    })
}

/// `key=value`, the value unquoted.
fn param(p: &str) -> Option<(&str, &str)> {
    let (key, value) = p.split_once('=')?;
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Some((key.trim(), value))
}

/// `Grip-Status: 404 Not Found`.
fn grip_status(v: &HeaderValue) -> Result<(StatusCode, Option<String>), InstructError> {
    let text = v
        .to_str()
        .map_err(|_| bad("Grip-Status is not text"))?
        .trim();
    let (code, reason) = text.split_once(' ').unwrap_or((text, ""));
    let status = code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| bad("Grip-Status must start with a status code"))?;
    let reason = Some(reason.trim())
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    Ok((status, reason))
}

/// The app's headers the client gets: without `Grip-*` and framing, and
/// only those `Grip-Expose-Headers` lists when it is given.
fn exposed(headers: &HeaderMap) -> Result<HeaderMap, InstructError> {
    let mut allow: Option<Vec<HeaderName>> = None;
    for v in headers.get_all("grip-expose-headers") {
        let text = v
            .to_str()
            .map_err(|_| bad("Grip-Expose-Headers is not text"))?;
        let names = text.split(',').map(str::trim).filter(|n| !n.is_empty());
        for name in names {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                bad(format!(
                    "Grip-Expose-Headers: {name:?} is not a header name"
                ))
            })?;
            allow.get_or_insert_with(Vec::new).push(name);
        }
    }
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let keep = !is_grip_header(name)
            && !is_framing(name)
            && allow.as_ref().is_none_or(|a| a.contains(name));
        if keep {
            out.append(name.clone(), format::owned(value));
        }
    }
    Ok(out)
}

/// `Grip-*`: instructions to the proxy, never shown to the client.
pub fn is_grip_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("grip-")
}

/// `Grip-Keep-Alive: data; format=raw|cstring|base64; timeout=S; mode=idle|interval`.
fn keep_alive_header(v: &HeaderValue) -> Result<KeepAlive, InstructError> {
    let text = v.to_str().map_err(|_| bad("Grip-Keep-Alive is not text"))?;
    let mut parts = text.split(';');
    let data = parts.next().unwrap_or_default().trim();
    let (mut format, mut timeout, mut interval) = ("raw", None, false);
    for (key, value) in parts.filter_map(param) {
        match key.to_ascii_lowercase().as_str() {
            "format" => format = value,
            "timeout" => {
                timeout = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| bad("Grip-Keep-Alive timeout must be whole seconds"))?,
                )
            }
            "mode" => interval = value.eq_ignore_ascii_case("interval"),
            _ => {}
        }
    }
    let data = match format {
        "raw" => Bytes::copy_from_slice(data.as_bytes()),
        "cstring" => unescape(data)?,
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(data)
            .map(Bytes::from)
            .map_err(|_| bad("Grip-Keep-Alive data is not base64"))?,
        other => return Err(bad(format!("Grip-Keep-Alive format {other:?} is unknown"))),
    };
    keep_alive(data, timeout, interval)
}

fn keep_alive(
    data: Bytes,
    timeout: Option<u64>,
    interval: bool,
) -> Result<KeepAlive, InstructError> {
    if data.is_empty() {
        return Err(bad("keep-alive data is empty"));
    }
    if data.len() > GRIP_KEEP_ALIVE_MAX_BYTES {
        return Err(bad(format!(
            "keep-alive data is over {GRIP_KEEP_ALIVE_MAX_BYTES} bytes"
        )));
    }
    // At least a second, as Pushpin: a smaller beat would be a flood.
    let every = timeout.map_or(GRIP_KEEP_ALIVE, |s| Duration::from_secs(s.max(1)));
    // A beat no stream lives to hear is none (and keeps clock sums small).
    let every = every.min(crate::defaults::GRIP_STREAM_MAX_LIMIT);
    Ok(KeepAlive {
        data,
        every,
        interval,
    })
}

/// `cstring` escapes: `\\`, `\r`, `\n`, `\t`, `\xHH`.
fn unescape(s: &str) -> Result<Bytes, InstructError> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let hex = [bytes.next(), bytes.next()];
                let byte = match hex {
                    [Some(h), Some(l)] => std::str::from_utf8(&[h, l])
                        .ok()
                        .and_then(|t| u8::from_str_radix(t, 16).ok()),
                    _ => None,
                };
                out.push(byte.ok_or_else(|| bad("cstring: \\x needs two hex digits"))?);
            }
            _ => return Err(bad("cstring: unknown escape")),
        }
    }
    Ok(Bytes::from(out))
}

/// The JSON form: `{"hold": {...}, "response": {...}}`.
fn parse_json(body: &[u8]) -> Result<Instruction, InstructError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("application/grip-instruct body is not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("application/grip-instruct body must be an object"))?;
    let response = match obj.get("response") {
        // Its headers lose `Grip-*` and framing in `format::headers`.
        Some(r) => ResponseSpec::parse(r).map_err(|e| bad(format!("response: {e}")))?,
        None => ResponseSpec::parse(&Value::Object(Default::default()))?,
    };
    let Some(hold) = obj.get("hold") else {
        return Ok(Instruction::Respond(response));
    };
    let mode = match hold.get("mode").and_then(Value::as_str) {
        None | Some("response") => Mode::Response,
        Some("stream") => Mode::Stream,
        Some(other) => return Err(bad(format!("hold.mode {other:?} is unknown"))),
    };
    let mut channels = Vec::new();
    for (i, c) in hold
        .get("channels")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("hold.channels must be a list"))?
        .iter()
        .enumerate()
    {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("hold.channels[{i}].name is missing")))?;
        let name =
            ChannelName::parse(name).map_err(|e| bad(format!("hold.channels[{i}].name: {e}")))?;
        let prev_id = match c.get("prev-id") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(p.clone()),
            Some(_) => return Err(bad(format!("hold.channels[{i}].prev-id must be a string"))),
        };
        channels.push(HoldChannel { name, prev_id });
    }
    let timeout = match hold.get("timeout") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            t.as_u64()
                .ok_or_else(|| bad("hold.timeout must be whole seconds"))?,
        ),
    };
    let keep_alive = match hold.get("keep-alive") {
        None | Some(Value::Null) => None,
        Some(k) => {
            let chunk = super::format::StreamSpec::parse(k).map_err(|e| {
                bad(format!(
                    "hold.keep-alive: {}",
                    e.0.replace("http-stream", "keep-alive")
                ))
            })?;
            let timeout = match k.get("timeout") {
                None | Some(Value::Null) => None,
                Some(t) => Some(
                    t.as_u64()
                        .ok_or_else(|| bad("hold.keep-alive.timeout must be whole seconds"))?,
                ),
            };
            let interval = k.get("mode").and_then(Value::as_str) == Some("interval");
            Some(keep_alive(chunk.content, timeout, interval)?)
        }
    };
    checked(Hold {
        mode,
        channels,
        timeout,
        keep_alive,
        response,
    })
}

/// The rules both forms share.
fn checked(hold: Hold) -> Result<Instruction, InstructError> {
    if hold.channels.is_empty() {
        return Err(bad("a hold needs at least one channel (Grip-Channel)"));
    }
    if hold.channels.len() > GRIP_MAX_CHANNELS {
        return Err(bad(format!(
            "a hold may name at most {GRIP_MAX_CHANNELS} channels"
        )));
    }
    let mut names: Vec<&ChannelName> = hold.channels.iter().map(|c| &c.name).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad("a channel is named twice"));
    }
    Ok(Instruction::Hold(hold))
}

#[cfg(test)]
mod tests;
