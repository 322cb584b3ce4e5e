//! Writing an answer on the lean path: the head and, for nearly every poll
//! answer, the body in one buffer and one system call; a larger body frame
//! by frame, each write bounded by `server.write_timeout`; a body that has
//! to wait for its next frame (a GRIP stream) gets what is ready out first.
//!
//! Framing follows the body: a known length is `Content-Length`; an unknown
//! one (an authorization app's refusal passed through) is chunked on
//! HTTP/1.1, and on HTTP/1.0 runs to the connection's close.

use std::io;

use bytes::Bytes;
use http::header;
use http::{Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::net::TcpStream;

use crate::answer::Body;
use crate::defaults::LEAN_COALESCE_BYTES;

/// How the body's end is told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// HTTP/1.0 with no known length: the end of the connection.
    Close,
}

/// Why writing stopped.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The socket failed or the client took nothing for `write_timeout`.
    Io(io::Error),
    /// The body failed mid-way (an upstream that stalled or broke); the
    /// client sees a cut answer.
    Body,
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Writes `resp`; returns whether the connection may carry another request
/// (`keep_alive`, unless the framing needs the close). While the body waits
/// for its next frame, the client is watched: one that leaves ends the
/// answer (and frees what it held), bytes it sends (a pipelined request)
/// are kept in `buf`.
pub(super) async fn answer(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    resp: Response<Body>,
    version: Version,
    head_only: bool,
    keep_alive: bool,
    timeout: std::time::Duration,
) -> Result<bool, WriteError> {
    let (parts, mut body) = resp.into_parts();
    // 1xx, 204 and 304 have no body, whatever the answer carries (RFC 9110);
    // a 304 keeps the length its app gave, as hyper does.
    let status = parts.status;
    let bodiless = status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    let head_only = head_only || bodiless;
    let framing = match (body.size_hint().exact(), version) {
        _ if bodiless => Framing::Length(0),
        (Some(n), _) => Framing::Length(n),
        (None, Version::HTTP_11) => Framing::Chunked,
        (None, _) => Framing::Close,
    };
    let keep_alive = keep_alive && framing != Framing::Close;
    // Room for the head and, when it will join it, the whole body.
    let joined = match framing {
        Framing::Length(n) if !head_only => usize::try_from(n).unwrap_or(0),
        _ => 0,
    };
    let mut out = Vec::with_capacity(256 + joined.min(LEAN_COALESCE_BYTES));
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    // A reason phrase set on purpose (a GRIP app's `Grip-Status`) goes out
    // as set; otherwise the standard one.
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => out.extend_from_slice(reason.as_bytes()),
        None => out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let own_length = status == http::StatusCode::NOT_MODIFIED && name == header::CONTENT_LENGTH;
        if !own_length
            && (name == header::CONTENT_LENGTH
                || name == header::TRANSFER_ENCODING
                || name == header::CONNECTION)
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
    match framing {
        _ if bodiless => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked if !head_only => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Chunked | Framing::Close => {}
    }
    match (keep_alive, version) {
        (false, _) => out.extend_from_slice(b"connection: close\r\n"),
        (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (true, _) => {}
    }
    out.extend_from_slice(b"\r\n");
    // The head is written out: its headers are not kept for the body's
    // life (an event stream's can be ten minutes).
    drop(parts);
    if head_only {
        write_all(stream, &out, timeout).await?;
        return Ok(keep_alive);
    }
    let mut written: u64 = 0;
    let mut pending = Some(out);
    loop {
        // What is ready joins the head; when the body must wait (a stream
        // whose next chunk has not come), what is held back goes out first.
        // Looked at once more only while the head waits to be joined: an
        // event stream would otherwise be polled twice per event.
        let ready = match pending {
            Some(_) => futures_util::FutureExt::now_or_never(body.frame()),
            None => None,
        };
        let next = match ready {
            Some(next) => next,
            None => {
                if let Some(head) = pending.take() {
                    write_all(stream, &head, timeout).await?;
                }
                tokio::select! {
                    next = body.frame() => next,
                    super::Closed(_) = super::closed(stream, buf) => {
                        return Err(WriteError::Io(io::ErrorKind::ConnectionAborted.into()));
                    }
                }
            }
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(_)) => {
                if let Some(head) = pending.take() {
                    // Nothing is out yet: the head alone, then the cut.
                    write_all(stream, &head, timeout).await?;
                }
                return Err(WriteError::Body);
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // Trailers: not sent on the lean path.
        };
        if data.is_empty() {
            // An empty chunk would read as the end of a chunked body.
            continue;
        }
        written += data.len() as u64;
        if let Framing::Length(n) = framing {
            if written > n {
                return Err(WriteError::Body);
            }
        }
        let data = match framing {
            Framing::Chunked => chunk(&data),
            Framing::Length(_) | Framing::Close => data,
        };
        match pending.as_mut() {
            // Small answers: head and body go out together.
            Some(head) if head.len() + data.len() <= LEAN_COALESCE_BYTES => {
                head.extend_from_slice(&data);
            }
            Some(_) => {
                if let Some(head) = pending.take() {
                    write_all(stream, &head, timeout).await?;
                }
                write_all(stream, &data, timeout).await?;
            }
            None => write_all(stream, &data, timeout).await?,
        }
    }
    if let Framing::Length(n) = framing {
        if written != n {
            return Err(WriteError::Body);
        }
    }
    let mut last = pending.unwrap_or_default();
    if framing == Framing::Chunked {
        last.extend_from_slice(b"0\r\n\r\n");
    }
    if !last.is_empty() {
        write_all(stream, &last, timeout).await?;
    }
    Ok(keep_alive)
}

/// One chunk of a chunked body.
fn chunk(data: &Bytes) -> Bytes {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(data.len() + 20);
    // Written in place: one allocation per chunk (an event stream's every
    // delivery), not two.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Writes all of `data`; each wait for the socket to take more is bounded
/// by `timeout` (a client that stops reading is cut off, and the answer it
/// held is freed).
async fn write_all(
    stream: &TcpStream,
    mut data: &[u8],
    timeout: std::time::Duration,
) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(timeout, stream.writable()).await {
                    Ok(ready) => ready?,
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer bytes were taken within server.write_timeout",
                        ))
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    //! The lean writer against hyper's client: what it writes must read back
    //! as the same answer through an independent HTTP/1 implementation.

    use super::*;
    use bytes::Bytes;
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use tokio::net::{TcpListener, TcpStream};

    /// Writes `resp` with the lean writer on one end of a socket pair and
    /// reads it with hyper's client on the other; returns what hyper read
    /// and whether the lean writer kept the connection.
    async fn through_hyper(
        resp: Response<Body>,
        version: Version,
        head_only: bool,
    ) -> (http::response::Parts, Bytes, bool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        let method = if head_only {
            http::Method::HEAD
        } else {
            http::Method::GET
        };
        let req = http::Request::builder()
            .method(method)
            .version(version)
            .uri("/p/x")
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let asked = tokio::spawn(async move { send.send_request(req).await });
        // The request itself is not read here: the writer answers blind.
        let mut server = server;
        let kept = answer(
            &mut server,
            &mut Vec::new(),
            resp,
            version,
            head_only,
            true,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
        if !kept {
            drop(server);
        }
        let got = asked.await.unwrap().unwrap();
        let (parts, body) = got.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts, body, kept)
    }

    fn streamed(chunks: &[&'static [u8]]) -> Body {
        let frames = chunks
            .iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c))))
            .collect::<Vec<_>>();
        crate::answer::stream(StreamBody::new(stream::iter(frames)))
    }

    #[tokio::test]
    async fn a_known_length_answer_of_any_size_reads_back_whole() {
        let big = Bytes::from(vec![b'z'; 3 * LEAN_COALESCE_BYTES + 7]);
        let resp = crate::answer::json_pieces(
            http::StatusCode::OK,
            [Bytes::from_static(b"ab"), big.clone()],
            None,
        );
        let (parts, body, kept) = through_hyper(resp, Version::HTTP_11, false).await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["content-length"], (big.len() + 2).to_string());
        assert_eq!(body.len(), big.len() + 2);
        assert!(kept);
    }

    #[tokio::test]
    async fn an_answer_of_unknown_length_is_chunked_on_http_1_1_and_skips_empty_frames() {
        let resp = Response::new(streamed(&[b"hello ", b"", b"world"]));
        let (parts, body, kept) = through_hyper(resp, Version::HTTP_11, false).await;
        assert_eq!(parts.headers["transfer-encoding"], "chunked");
        assert_eq!(body, Bytes::from_static(b"hello world"));
        assert!(kept);
    }

    #[tokio::test]
    async fn an_answer_of_unknown_length_runs_to_the_close_on_http_1_0() {
        let resp = Response::new(streamed(&[b"to the ", b"end"]));
        let (parts, body, kept) = through_hyper(resp, Version::HTTP_10, false).await;
        assert_eq!(parts.headers["connection"], "close");
        assert_eq!(body, Bytes::from_static(b"to the end"));
        assert!(!kept, "the close is the body's end");
    }

    #[tokio::test]
    async fn a_head_answer_has_the_length_and_no_body() {
        let resp = crate::answer::json(http::StatusCode::OK, "{\"n\":1}");
        let (parts, body, kept) = through_hyper(resp, Version::HTTP_11, true).await;
        assert_eq!(parts.headers["content-length"], "7");
        assert!(body.is_empty());
        assert!(kept);
    }
}
