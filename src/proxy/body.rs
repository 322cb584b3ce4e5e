//! An upstream's response body on its way to the client: the route's
//! `timeout` bounds each wait for its next bytes (nginx's
//! `proxy_read_timeout` applies between every read), and the request's
//! place among the upstream's `max_in_flight` is held until it ends.
//!
//! A body that stalls or breaks fails with an error the server turns into
//! a cut answer (HTTP/1: the connection closes before the announced end;
//! HTTP/2: the stream is reset): the client sees it was cut, never a
//! silent hang, and the upstream connection is not reused.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use crate::metrics::Metrics;

/// Why an upstream body ended early.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error("upstream {upstream} sent nothing more for {}", humantime::format_duration(*.after))]
    Stalled { upstream: String, after: Duration },
    #[error("upstream {upstream} broke off its answer")]
    Broken {
        upstream: String,
        #[source]
        source: hyper::Error,
    },
}

impl UpstreamBodyError {
    /// The `kind` label of `pollgate_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamBodyError::Stalled { .. } => "body_timeout",
            UpstreamBodyError::Broken { .. } => "body_broken",
        }
    }

    pub fn upstream(&self) -> &str {
        match self {
            UpstreamBodyError::Stalled { upstream, .. }
            | UpstreamBodyError::Broken { upstream, .. } => upstream,
        }
    }
}

pub struct UpstreamBody {
    inner: Incoming,
    idle: Duration,
    /// Armed while a read waits; made on demand.
    sleep: Option<Pin<Box<Sleep>>>,
    upstream: String,
    /// Where a stall or a break is counted, as the upstream's error.
    metrics: Metrics,
    /// Released when the body is done or dropped.
    _in_flight: OwnedSemaphorePermit,
}

impl UpstreamBody {
    pub fn new(
        inner: Incoming,
        idle: Duration,
        in_flight: OwnedSemaphorePermit,
        upstream: String,
        metrics: Metrics,
    ) -> Self {
        UpstreamBody {
            inner,
            idle,
            sleep: None,
            upstream,
            metrics,
            _in_flight: in_flight,
        }
    }

    fn failed(&self, e: UpstreamBodyError) -> UpstreamBodyError {
        tracing::warn!(error = %e, "upstream answer cut short; the client's answer is cut too");
        self.metrics.upstream_error(e.upstream(), e.kind());
        e
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.sleep = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(source))) => {
                let e = UpstreamBodyError::Broken {
                    upstream: this.upstream.clone(),
                    source,
                };
                Poll::Ready(Some(Err(this.failed(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let e = UpstreamBodyError::Stalled {
                            upstream: this.upstream.clone(),
                            after: idle,
                        };
                        Poll::Ready(Some(Err(this.failed(e))))
                    }
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
