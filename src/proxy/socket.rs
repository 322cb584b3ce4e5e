//! An upstream TCP socket that hyper's connection reads and writes, with a
//! second, weak handle the pool keeps to ask the OS, before it sends a
//! request on a pooled connection, whether the app has closed it.
//!
//! Why: an app that closes after every answer (a worker that exits, a
//! keep-alive timeout of zero) leaves a pooled connection that hyper's
//! connection task has not yet seen close. A request sent on it fails; a
//! POST cannot be sent again. The kernel knows of the app's FIN as soon as
//! it arrives; one `recv(MSG_PEEK | MSG_DONTWAIT)` asks it (nginx's
//! `ngx_http_upstream_keepalive` looks the same way).
//!
//! The probe's handle is weak: when hyper drops the connection the socket
//! closes at once, whatever the pool still lists.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The socket as hyper's connection uses it.
pub(super) struct Socket {
    read: OwnedReadHalf,
    /// Shared with the probe (weakly): the last strong holder closes it.
    write: Arc<OwnedWriteHalf>,
}

/// The pool's look at a pooled connection's socket.
#[derive(Debug, Clone)]
pub(super) struct Probe(Weak<OwnedWriteHalf>);

/// What the OS says of an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Idle {
    /// Open, nothing waiting: a request may go out on it.
    Open,
    /// The app closed it (FIN or reset), or it is already gone.
    Closed,
    /// Bytes nobody asked for wait on it (an app's early `408`, junk): the
    /// next answer read from it would not be the next request's.
    Unasked,
}

impl Socket {
    pub(super) fn new(stream: TcpStream) -> (Socket, Probe) {
        let (read, write) = stream.into_split();
        let write = Arc::new(write);
        let probe = Probe(Arc::downgrade(&write));
        (Socket { read, write }, probe)
    }

    fn stream(&self) -> &TcpStream {
        (*self.write).as_ref()
    }
}

impl Probe {
    /// Looks without reading (nothing is taken from the socket).
    pub(super) fn idle(&self) -> Idle {
        let Some(write) = self.0.upgrade() else {
            return Idle::Closed;
        };
        let stream: &TcpStream = (*write).as_ref();
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        // tokio's sockets are non-blocking: this never waits.
        match socket2::SockRef::from(stream).peek(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Idle::Open,
            Ok(0) | Err(_) => Idle::Closed,
            Ok(_) => Idle::Unasked,
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl Socket {
    /// Writes with `write` once the socket is ready to take bytes.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let stream = self.stream();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match write(stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |s| s.try_write(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |s| s.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TCP socket has nothing buffered on this side.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(self.stream()).shutdown(std::net::Shutdown::Write))
    }
}
