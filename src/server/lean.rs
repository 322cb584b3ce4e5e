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
//! The moment a request is anything but a head `parse` is sure of on a
//! route the [`Lean`] hook takes (a proxied request, a body, an upgrade,
//! HTTP/2's preface, a head with odd framing, one too large), the
//! connection is handed to hyper with the bytes read so far, and hyper
//! serves it from then on, answering malformed input exactly as it always
//! does (see `parse` for the one framing policy both paths share).

mod parse;
mod write;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Empty;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{ConnInfo, ConnSettings};
use crate::answer::Body;
use crate::defaults::{LEAN_READ_CHUNK, MAX_HEADER_BYTES};
use crate::metrics::ClientError;
use parse::{Head, Parsed};

/// A request as the lean path hands it over: the head, no body.
pub type LeanRequest = Request<Empty<Bytes>>;

/// A future answering one lean request.
pub type LeanFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// What the lean path serves: the hook looks at a parsed, body-less
/// GET/HEAD and answers it (pollgate: "it is on a poll route"), or gives
/// `None` and the connection goes to hyper. One call, one route lookup.
#[derive(Clone)]
pub struct Lean {
    pub serve: Arc<dyn Fn(LeanRequest, ConnInfo) -> Option<LeanFuture> + Send + Sync>,
}

/// How a lean connection ended.
pub enum Ended {
    /// Closed (by either side, by shutdown, or after a deadline), with the
    /// client's fault when it was one.
    Closed(Option<ClientError>),
    /// Hyper takes over: the socket and the bytes already read from it.
    HandOver(TcpStream, Vec<u8>),
}

/// Serves requests on `stream` until it closes or a request needs hyper.
pub async fn serve(
    mut stream: TcpStream,
    info: &ConnInfo,
    lean: &Lean,
    settings: &ConnSettings,
    shutdown: &CancellationToken,
) -> Ended {
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        // Reading and writing are boxed: their futures are larger than what a
        // held poll needs between the two, and a task is as large as its
        // largest state.
        let head = match Box::pin(read_head(
            &mut stream,
            &mut buf,
            first,
            settings.header_timeout,
            shutdown,
        ))
        .await
        {
            Ok(Some(head)) => head,
            Ok(None) => return Ended::HandOver(stream, buf),
            Err(Closed(fault)) => return Ended::Closed(fault),
        };
        let Head {
            req,
            len,
            keep_alive,
        } = *head;
        let head_only = req.method() == Method::HEAD;
        let version = req.version();
        let Some(fut) = (lean.serve)(req, info.clone()) else {
            return Ended::HandOver(stream, buf);
        };
        first = false;
        buf.drain(..len);
        if buf.is_empty() {
            // Free what the head took: a held poll keeps no read buffer.
            buf = Vec::new();
        }
        let resp = tokio::select! {
            resp = fut => resp,
            // The client left (or sent more than a pipeline may): drop the
            // poll, which counts it as gone and frees its subscription.
            Closed(fault) = closed(&mut stream, &mut buf) => return Ended::Closed(fault),
        };
        let keep_alive = keep_alive && !shutdown.is_cancelled();
        let written = Box::pin(write::answer(
            &mut stream,
            &mut buf,
            resp,
            version,
            head_only,
            keep_alive,
            settings.write_timeout,
        ))
        .await;
        match written {
            Ok(true) => {}
            Ok(false) | Err(write::WriteError::Body) => return Ended::Closed(None),
            Err(write::WriteError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                return Ended::Closed(Some(ClientError::write_timeout))
            }
            Err(write::WriteError::Io(_)) => return Ended::Closed(None),
        }
    }
}

/// The connection is closed, or should be; with the client's fault when
/// it was one.
struct Closed(Option<ClientError>);

/// Reads until `buf` holds a complete head the lean path can serve:
/// `Ok(None)` hands the connection to hyper (not HTTP/1, malformed, odd
/// framing, too large, has a body or an upgrade).
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    first: bool,
    header_timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Box<Head>>, Closed> {
    // The head must be complete within `header_timeout` of the connection's
    // start or of the previous answer: that also closes idle keep-alive
    // connections, as on the hyper path.
    let deadline = tokio::time::sleep(header_timeout);
    tokio::pin!(deadline);
    loop {
        match parse::parse(buf) {
            Parsed::Head(head) => return Ok(Some(head)),
            Parsed::NotLean => return Ok(None),
            Parsed::Partial if buf.len() >= MAX_HEADER_BYTES => return Ok(None),
            Parsed::Partial => {}
        }
        tokio::select! {
            read = read_more(stream, buf) => read?,
            // No request since connecting, or part of a head and then
            // nothing, is a client's fault (a slow-loris); an idle
            // keep-alive that ends is not.
            _ = &mut deadline => {
                let slow = first || !buf.is_empty();
                return Err(Closed(slow.then_some(ClientError::no_request)));
            }
            _ = shutdown.cancelled() => return Err(Closed(None)),
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
            Poll::Ready(_) => Poll::Ready(Err(Closed(None))),
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
            return Closed(None);
        }
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

super::io::forward_writes!(Prefixed, io);
