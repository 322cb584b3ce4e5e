//! The lean path's one decision: is this request head one it serves
//! exactly as hyper would, or does it go to hyper?
//!
//! It serves only what it is sure of: a complete `GET` or `HEAD` in
//! origin-form, HTTP/1.0 or 1.1, every line ending in CRLF, no body (no
//! `Transfer-Encoding`, no `Content-Length` but a single `0`), no upgrade,
//! no expectation. Everything else (duplicate or conflicting lengths,
//! `Transfer-Encoding` with `Content-Length`, obs-fold, a bare CR or LF,
//! an absolute or `*` target, HTTP/2's preface, a head httparse refuses or
//! that is too large) is handed to hyper with the bytes read so far, and
//! hyper answers it as it answers any connection: so both HTTP/1 paths
//! follow one framing policy, hyper's. `differential` proves it on
//! generated heads.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version};
use http_body_util::Empty;

use super::LeanRequest;
use crate::defaults::MAX_HEADERS;

pub(super) struct Head {
    pub req: LeanRequest,
    /// Bytes of the buffer the head took.
    pub len: usize,
    /// Whether the connection stays open after the answer, as hyper decides.
    pub keep_alive: bool,
}

pub(super) enum Parsed {
    // Boxed: it travels through the read loop's state, which stays small.
    Head(Box<Head>),
    Partial,
    /// Hyper's to serve (or refuse).
    NotLean,
}

pub(super) fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut raw = httparse::Request::new(&mut headers);
    let len = match raw.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotLean,
    };
    let method = match raw.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::NotLean,
    };
    let version = match raw.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Parsed::NotLean,
    };
    // httparse takes a bare LF for a line end (and refuses a bare CR);
    // proxies in front may read a bare LF differently: hyper's.
    if bare_lf(&buf[..len]) {
        return Parsed::NotLean;
    }
    // One copy of the head; the target and every header value are slices
    // of it (httparse's fields all point into `buf`).
    let head = Bytes::copy_from_slice(&buf[..len]);
    let slice = |part: &[u8]| {
        let at = offset(buf, part);
        (at + part.len() <= head.len()).then(|| head.slice(at..at + part.len()))
    };
    let Some(target) = raw.path.filter(|p| p.starts_with('/')) else {
        // Absolute-form, authority-form and `*`: hyper's.
        return Parsed::NotLean;
    };
    let Some(Ok(uri)) = slice(target.as_bytes()).map(http::Uri::from_maybe_shared) else {
        return Parsed::NotLean;
    };
    let mut map = HeaderMap::with_capacity(raw.headers.len());
    for h in raw.headers.iter() {
        let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            slice(h.value).map(HeaderValue::from_maybe_shared),
        ) else {
            return Parsed::NotLean;
        };
        map.append(name, value);
    }
    if !bodiless(&map) || map.contains_key(header::UPGRADE) || map.contains_key(header::EXPECT) {
        return Parsed::NotLean;
    }
    let keep_alive = keep_alive(version, &map);
    let mut req = Request::new(Empty::new());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = map;
    Parsed::Head(Box::new(Head {
        req,
        len,
        keep_alive,
    }))
}

/// Whether a line of `head` ends in LF alone (a head has a handful of
/// lines: memchr finds them without looking at every byte).
fn bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// No body, and no room to read one differently: no `Transfer-Encoding`,
/// and no `Content-Length` or exactly one that says `0`.
fn bodiless(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return false;
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => true,
        (Some(only), None) => only.as_bytes() == b"0",
        (Some(_), Some(_)) => false,
    }
}

/// Where `part`, a slice of `buf`, starts in it.
fn offset(buf: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize)
}

/// hyper's rule, line for line: HTTP/1.1 keeps the connection unless a
/// `Connection` header says `close`; HTTP/1.0 closes it unless one says
/// `keep-alive` and none (before or after) says `close`.
fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |value: &HeaderValue, token: &str| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let mut keep = version == Version::HTTP_11;
    let mut closed = false;
    for value in headers.get_all(header::CONNECTION) {
        if closed || has(value, "close") {
            closed = true;
            keep = false;
        } else if !keep {
            keep = has(value, "keep-alive");
        }
    }
    keep
}

#[cfg(test)]
#[path = "differential.rs"]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(head: &str) -> &'static str {
        match parse(head.as_bytes()) {
            Parsed::Head(h) if h.keep_alive => "serve",
            Parsed::Head(_) => "serve, then close",
            Parsed::Partial => "partial",
            Parsed::NotLean => "hyper",
        }
    }

    #[test]
    fn plain_polls_are_served_here() {
        assert_eq!(
            decide("GET /p/x?since=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            "serve"
        );
        assert_eq!(decide("HEAD /p/x HTTP/1.1\r\n\r\n"), "serve");
        assert_eq!(
            decide("GET /p/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            "serve"
        );
        assert_eq!(
            decide("GET /p/x HTTP/1.1\r\nConnection: close\r\n\r\n"),
            "serve, then close"
        );
        assert_eq!(decide("GET /p/x HTTP/1.0\r\n\r\n"), "serve, then close");
        assert_eq!(
            decide("GET /p/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            "serve"
        );
        assert_eq!(decide("GET /p/x HTTP/1.1\r\nHost: a\r\n"), "partial");
    }

    #[test]
    fn framing_that_could_desync_goes_to_hyper() {
        for head in [
            // Two lengths: the second would be read as the next request.
            "GET /p/x HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n",
            "GET /p/x HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "GET /p/x HTTP/1.1\r\nContent-Length: 40\r\n\r\n",
            "GET /p/x HTTP/1.1\r\nContent-Length: 00\r\n\r\n",
            "GET /p/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
            "GET /p/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET /p/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /p/x HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n",
            "GET /p/x HTTP/1.1\nHost: a\n\n",
            "GET /p/x HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            "GET http://a/p/x HTTP/1.1\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "POST /p/x HTTP/1.1\r\n\r\n",
            "GET /p/x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /p/x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(decide(head), "hyper", "{head:?}");
        }
    }

    #[test]
    fn as_many_headers_as_hyper_takes_and_no_more() {
        let head = |n: usize| format!("GET /p/x HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(n));
        assert_eq!(decide(&head(crate::defaults::MAX_HEADERS)), "serve");
        assert_eq!(decide(&head(crate::defaults::MAX_HEADERS + 1)), "hyper");
    }

    #[test]
    fn close_wins_over_keep_alive_in_any_order() {
        for head in [
            "GET /p/x HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            "GET /p/x HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
            "GET /p/x HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
        ] {
            assert_eq!(decide(head), "serve, then close", "{head:?}");
        }
    }
}
