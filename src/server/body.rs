//! Request bodies as handlers see them: hyper's body with an idle deadline
//! (`server.body_timeout` between two reads), and a record of how it is
//! going ([`BodyWatch`]), so that whoever reads it (the proxy, the webhook)
//! can tell a client's abort or stall from an upstream's failure, and can
//! start the wait for an answer when the request has been sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};

/// How the client failed its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyFault {
    #[error("the client closed the connection in the middle of the request body")]
    Aborted,
    #[error("the client stopped sending the request body (server.body_timeout)")]
    Stalled,
}

/// Where a request records how its body is going; in the request's
/// extensions (only when it has a body).
#[derive(Debug, Clone)]
pub struct BodyWatch(Arc<Watched>);

#[derive(Debug)]
struct Watched {
    fault: OnceLock<BodyFault>,
    /// When the body last moved (a frame read, or its end).
    progress: Mutex<Instant>,
    /// The last read found nothing: the body waits on the client.
    waiting: AtomicBool,
    complete: AtomicBool,
}

impl BodyWatch {
    fn new() -> Self {
        BodyWatch(Arc::new(Watched {
            fault: OnceLock::new(),
            progress: Mutex::new(Instant::now()),
            waiting: AtomicBool::new(false),
            complete: AtomicBool::new(false),
        }))
    }

    /// The client's fault, if its body failed.
    pub fn fault(&self) -> Option<BodyFault> {
        self.0.fault.get().copied()
    }

    /// When the body last moved.
    pub fn progress(&self) -> Instant {
        *self.0.progress.lock()
    }

    /// Whether the whole body has been read.
    pub fn complete(&self) -> bool {
        self.0.complete.load(Ordering::Acquire)
    }

    /// Whether the body is waiting on the client right now (as opposed to
    /// its reader not asking: an upstream that stopped reading).
    pub fn waiting_on_client(&self) -> bool {
        self.0.waiting.load(Ordering::Acquire)
    }

    fn moved(&self, complete: bool) {
        *self.0.progress.lock() = Instant::now();
        self.0.waiting.store(false, Ordering::Release);
        if complete {
            self.0.complete.store(true, Ordering::Release);
        }
    }
}

/// A request body with an idle deadline.
pub struct RequestBody {
    inner: Incoming,
    idle: Duration,
    /// Armed while a read waits; made on demand.
    sleep: Option<Pin<Box<Sleep>>>,
    watch: Option<BodyWatch>,
}

impl RequestBody {
    /// Wraps `inner`; the watch is `Some` when there is a body to watch.
    pub fn new(inner: Incoming, idle: Duration) -> (RequestBody, Option<BodyWatch>) {
        let watch = (!inner.is_end_stream()).then(BodyWatch::new);
        let body = RequestBody {
            inner,
            idle,
            sleep: None,
            watch: watch.clone(),
        };
        (body, watch)
    }

    fn failed(&self, fault: BodyFault) -> BodyFault {
        if let Some(watch) = &self.watch {
            let _ = watch.0.fault.set(fault);
        }
        fault
    }

    fn moved(&self, complete: bool) {
        if let Some(watch) = &self.watch {
            watch.moved(complete);
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.sleep = None;
                this.moved(this.inner.is_end_stream());
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(this.failed(BodyFault::Aborted)))),
            Poll::Ready(None) => {
                this.moved(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(watch) = &this.watch {
                    watch.0.waiting.store(true, Ordering::Release);
                }
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(this.failed(BodyFault::Stalled)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_follows_the_body() {
        let watch = BodyWatch::new();
        assert!(!watch.complete() && watch.fault().is_none());
        watch.0.waiting.store(true, Ordering::Release);
        assert!(watch.waiting_on_client());
        watch.moved(false);
        assert!(!watch.waiting_on_client() && !watch.complete());
        watch.moved(true);
        assert!(watch.complete());
    }
}
