//! The lean HTTP/1.1 path: a connection whose requests are long polls is
//! served here, without hyper's per-connection machinery.
//!
//! Why: hyper keeps an 8 KiB write buffer and a read buffer that grows to
//! 16 KiB for the whole life of a connection; a held poll needs neither.
//! Measured with massif at 2,000 held polls: 24.5 of 32 KiB of heap per poll
//! were those two buffers. Here a held poll owns its parsed head, the poll
//! future and the socket, nothing more; the bytes read are freed as soon as
//! the head is parsed.
//!
//! The moment a request is anything but a body-less GET or HEAD on a route
//! the `Lean` hook accepts (a proxied request, a body, an upgrade, HTTP/2's
//! preface, a head httparse refuses, a head too large), the connection is
//! handed to hyper with the bytes read so far, and hyper serves it from then
//! on, answering malformed input exactly as it always does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::ConnInfo;
use crate::defaults::{LEAN_MAX_ANSWER_BYTES, LEAN_READ_CHUNK, MAX_HEADERS, MAX_HEADER_BYTES};
use crate::http::{self as h, Body};

/// A request as the lean path hands it over: the head, no body.
pub type LeanRequest = Request<Empty<Bytes>>;

/// A future answering one lean request.
pub type LeanFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// What the lean path serves: `accepts` says whether a parsed, body-less
/// GET/HEAD goes this way (pollgate: "it is on a poll route"), `handle`
/// answers it.
#[derive(Clone)]
pub struct Lean {
    pub accepts: Arc<dyn Fn(&LeanRequest) -> bool + Send + Sync>,
    pub handle: Arc<dyn Fn(LeanRequest, ConnInfo) -> LeanFuture + Send + Sync>,
}

/// How a lean connection ended.
pub enum Ended {
    /// Closed (by either side, by shutdown, or after a slow head).
    Closed,
    /// Hyper takes over: the socket and the bytes already read from it.
    HandOver(TcpStream, Vec<u8>),
}

/// Serves requests on `stream` until it closes or a request needs hyper.
pub async fn serve(
    mut stream: TcpStream,
    info: ConnInfo,
    lean: &Lean,
    header_timeout: Duration,
    shutdown: &CancellationToken,
) -> Ended {
    let mut buf = Vec::new();
    loop {
        // Reading and writing are boxed: their futures are larger than what a
        // held poll needs between the two, and a task is as large as its
        // largest state.
        let head = match Box::pin(read_head(&mut stream, &mut buf, header_timeout, shutdown)).await
        {
            Ok(Some(head)) => head,
            Ok(None) => return Ended::HandOver(stream, buf),
            Err(Closed) => return Ended::Closed,
        };
        let Head {
            req,
            len,
            keep_alive,
        } = *head;
        if !(lean.accepts)(&req) {
            return Ended::HandOver(stream, buf);
        }
        buf.drain(..len);
        if buf.is_empty() {
            // Free what the head took: a held poll keeps no read buffer.
            buf = Vec::new();
        }
        let head_only = req.method() == Method::HEAD;
        let version = req.version();
        let fut = (lean.handle)(req, info);
        let resp = tokio::select! {
            resp = fut => resp,
            // The client left (or sent more than a pipeline may): drop the
            // poll, which counts it as gone and frees its subscription.
            Closed = closed(&mut stream, &mut buf) => return Ended::Closed,
        };
        let keep_alive = keep_alive && !shutdown.is_cancelled();
        if Box::pin(write_response(
            &stream, resp, version, head_only, keep_alive,
        ))
        .await
        .is_err()
            || !keep_alive
        {
            return Ended::Closed;
        }
    }
}

/// The connection is closed, or should be.
struct Closed;

struct Head {
    req: LeanRequest,
    /// Bytes of `buf` the head took.
    len: usize,
    keep_alive: bool,
}

/// Reads until `buf` holds a complete head the lean path can serve:
/// `Ok(None)` hands the connection to hyper (not HTTP/1, malformed, too
/// large, has a body or an upgrade).
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    header_timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Box<Head>>, Closed> {
    // The head must be complete within `header_timeout` of the connection's
    // start or of the previous answer: that also closes idle keep-alive
    // connections, as on the hyper path.
    let deadline = tokio::time::sleep(header_timeout);
    tokio::pin!(deadline);
    loop {
        match parse(buf) {
            Parsed::Head(head) => return Ok(Some(head)),
            Parsed::NotLean => return Ok(None),
            Parsed::Partial if buf.len() >= MAX_HEADER_BYTES => return Ok(None),
            Parsed::Partial => {}
        }
        tokio::select! {
            read = read_more(stream, buf) => read?,
            _ = &mut deadline => return Err(Closed),
            _ = shutdown.cancelled() => return Err(Closed),
        }
    }
}

/// Appends what the socket has to `buf`; `Closed` at EOF or on an error.
///
/// Through `AsyncRead` rather than `try_read`: tokio then takes a short read
/// as proof that the socket is drained (edge-triggered epoll) and waits for
/// the next event instead of trying a read that would fail with EAGAIN.
/// Measured: one `recvfrom` fewer for most polls.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Closed> {
    std::future::poll_fn(|cx| {
        // A read buffer on the stack, not in the future: it is used only
        // within one poll.
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); LEAN_READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut *stream).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(()))
            }
            Poll::Ready(_) => Poll::Ready(Err(Closed)),
        }
    })
    .await
}

/// Resolves when the client closes the connection while its request is
/// being answered. Bytes it sends meanwhile (a pipelined request) are kept;
/// past `MAX_HEADER_BYTES` of them the connection is given up on.
async fn closed(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Closed {
    loop {
        if read_more(stream, buf).await.is_err() || buf.len() > MAX_HEADER_BYTES {
            return Closed;
        }
    }
}

enum Parsed {
    // Boxed: it travels through the read loop's state, which stays small.
    Head(Box<Head>),
    Partial,
    NotLean,
}

fn parse(buf: &[u8]) -> Parsed {
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
    // One copy of the head; the target and every header value are slices
    // of it (httparse's fields all point into `buf`).
    let head = Bytes::copy_from_slice(&buf[..len]);
    let slice = |part: &[u8]| {
        let at = offset(buf, part);
        (at + part.len() <= head.len()).then(|| head.slice(at..at + part.len()))
    };
    let Some(Ok(uri)) = raw
        .path
        .and_then(|p| slice(p.as_bytes()))
        .map(http::Uri::from_maybe_shared)
    else {
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
    // A body, an upgrade or an expectation is hyper's business.
    let has_body = map
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || map.contains_key(header::TRANSFER_ENCODING);
    if has_body || map.contains_key(header::UPGRADE) || map.contains_key(header::EXPECT) {
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

/// Where `part`, a slice of `buf`, starts in it.
fn offset(buf: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize)
}

/// HTTP/1.1 keeps the connection unless told `close`; 1.0 closes unless
/// told `keep-alive`.
fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let says = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match version {
        Version::HTTP_10 => says("keep-alive"),
        _ => !says("close"),
    }
}

/// Writes `resp` in one buffer (one syscall for a poll answer).
async fn write_response(
    stream: &TcpStream,
    resp: Response<Body>,
    version: Version,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let (parts, body) = resp.into_parts();
    // Poll answers are in memory already; an authorization app's refusal is
    // passed through, up to a cap.
    let (status, data) = match collect(body, LEAN_MAX_ANSWER_BYTES).await {
        Some(data) => (parts.status, data),
        None => (
            http::StatusCode::BAD_GATEWAY,
            Data {
                first: h::error_body("the upstream's answer could not be read"),
                rest: Vec::new(),
            },
        ),
    };
    let len = data.first.len() + data.rest.iter().map(Bytes::len).sum::<usize>();
    let mut out = Vec::with_capacity(256 + if head_only { 0 } else { len });
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        date::with_now(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    match (keep_alive, version) {
        (false, _) => out.extend_from_slice(b"connection: close\r\n"),
        (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (true, _) => {}
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&data.first);
        for chunk in &data.rest {
            out.extend_from_slice(chunk);
        }
    }
    let mut rest = &out[..];
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A body's data: nearly always one chunk, kept without a list.
struct Data {
    first: Bytes,
    rest: Vec<Bytes>,
}

/// The body's data, or `None` if it fails or passes `cap` bytes.
async fn collect(mut body: Body, cap: usize) -> Option<Data> {
    let mut data = Data {
        first: Bytes::new(),
        rest: Vec::new(),
    };
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame.ok()?.into_data() {
            len += chunk.len();
            if len > cap {
                return None;
            }
            if data.first.is_empty() {
                data.first = chunk;
            } else {
                data.rest.push(chunk);
            }
        }
    }
    Some(data)
}

/// The `Date` header's value, formatted once a second per thread (as hyper does).
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub fn with_now(f: impl FnOnce(&[u8])) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with_borrow_mut(|(at, text)| {
            if *at != second {
                *at = second;
                *text = httpdate::fmt_http_date(now);
            }
            f(text.as_bytes());
        });
    }
}

/// The bytes read by the lean path, then the socket: what hyper reads when
/// it takes a connection over.
pub struct Prefixed {
    prefix: Bytes,
    io: TcpStream,
}

impl Prefixed {
    pub fn new(prefix: Vec<u8>, io: TcpStream) -> Prefixed {
        Prefixed {
            prefix: Bytes::from(prefix),
            io,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            let head = self.prefix.split_to(n);
            out.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
