//! A connection's write deadline: a write (or flush) that makes no
//! progress for `server.write_timeout` fails, which ends the connection
//! and frees what it held. Without it, a client that never reads kept its
//! answer in memory for as long as it kept the connection open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::answer::SendQueue;

/// `impl AsyncWrite` for a wrapper that only watches what it reads: every
/// write goes to its field `$io` as it is.
macro_rules! forward_writes {
    ($wrapper:ty, $io:ident $(, $bound:ident)?) => {
        impl$(<$bound: tokio::io::AsyncWrite + Unpin>)? tokio::io::AsyncWrite for $wrapper {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                data: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$io).poll_write(cx, data)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$io.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$io).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$io).poll_shutdown(cx)
            }
        }
    };
}
pub(super) use forward_writes;

/// The error a stalled write fails with.
const STALLED: &str = "no answer bytes were taken within server.write_timeout";

pub(super) struct WriteDeadline<T> {
    io: T,
    timeout: Duration,
    /// The connection's send queue, marked when the deadline passes: what
    /// was waiting on the connection then ends as a slow client's.
    queue: std::sync::Arc<SendQueue>,
    /// Armed when a write is first refused; cleared by any progress.
    /// Boxed and made on demand: most connections never wait to write.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub(super) fn new(io: T, timeout: Duration, queue: std::sync::Arc<SendQueue>) -> Self {
        WriteDeadline {
            io,
            timeout,
            queue,
            sleep: None,
        }
    }

    /// After the inner write returned `Pending`: `Ready(error)` once the
    /// deadline has passed, else `Pending` (woken by the socket or the timer).
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.queue.mark_stalled();
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, STALLED))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn deadline<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.sleep = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.expired(cx).map(Err),
        }
    }
}

/// Whether a connection error is this deadline passing.
pub(super) fn is_write_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut && io.to_string() == STALLED {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write(cx, data);
        this.deadline(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.deadline(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.deadline(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_takes_fails_after_the_timeout() {
        // A pipe with room for 16 bytes whose other end never reads.
        let (ours, _theirs) = tokio::io::duplex(16);
        let mut io = WriteDeadline::new(
            ours,
            Duration::from_secs(30),
            std::sync::Arc::new(SendQueue::new(1024)),
        );
        let started = tokio::time::Instant::now();
        let err = io.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let wrapped: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
        assert!(is_write_timeout(&*wrapped));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_is_never_cut() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut io = WriteDeadline::new(
            ours,
            Duration::from_secs(30),
            std::sync::Arc::new(SendQueue::new(1024)),
        );
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            let mut got = 0;
            while got < 160 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                got += tokio::io::AsyncReadExt::read(&mut theirs, &mut buf)
                    .await
                    .unwrap();
            }
        });
        io.write_all(&[0; 160]).await.unwrap();
        reader.await.unwrap();
    }
}
