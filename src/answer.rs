//! What every handler answers with: the body type, JSON responses, the one
//! function that turns an error into a response, and the per-connection
//! send queue that bounds what answers may wait for a slow client.
//!
//! (Named `answer`, not `http`, so that `http` always means the crate.)

mod chunks;
mod frames;
mod handed;
mod queue;

pub use chunks::{chunks, BodyGone, ChunkSender, ChunkSlot, Chunks};
pub use frames::Frames;
pub use handed::Handed;
pub use queue::{QueueClosed, SendQueue};

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body can fail with (upstream resets, client aborts).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of every handler: a fixed buffer or a streamed upstream body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` (a refcount, never a copy).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Streams any hyper-compatible body through unchanged.
pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A JSON response that no cache may keep: every pollgate-made answer is
/// about one moment (a message, a timeout, an error).
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    json_body(status, full(body))
}

/// A JSON answer made of shared pieces (a poll's messages), counted in the
/// connection's send `queue` until the connection takes it.
pub fn json_pieces(
    status: StatusCode,
    pieces: impl IntoIterator<Item = Bytes>,
    queue: Option<Arc<SendQueue>>,
) -> Response<Body> {
    let body = Frames::new(pieces, queue)
        .map_err(|never| match never {})
        .boxed_unsync();
    json_body(status, body)
}

fn json_body(status: StatusCode, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Who caused an error; decides the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bad input: logged at debug, since clients misbehave all the time.
    Client,
    /// The upstream app failed or was slow: worth a warning.
    Upstream,
    /// A cap turned the request away to protect the app or pollgate (an
    /// upstream's `max_in_flight`, the poll limits): counted in its own
    /// metric; logged at debug, since a busy minute would flood the log.
    Capacity,
    /// pollgate itself: an error.
    Internal,
}

/// An error that pollgate answers a request with.
pub trait HttpError: std::fmt::Display {
    fn status(&self) -> StatusCode;
    fn fault(&self) -> Fault;
}

/// `{"error": "..."}` with the error's status. Internal errors say only
/// "internal error" to the client; the details go to the log.
pub fn error_response(err: &impl HttpError) -> Response<Body> {
    let status = err.status();
    let message = match err.fault() {
        Fault::Client | Fault::Capacity => {
            tracing::debug!(status = status.as_u16(), error = %err, "request rejected");
            err.to_string()
        }
        Fault::Upstream => {
            tracing::warn!(status = status.as_u16(), error = %err, "upstream failure");
            err.to_string()
        }
        Fault::Internal => {
            tracing::error!(status = status.as_u16(), error = %err, "internal error");
            "internal error".to_owned()
        }
    };
    let mut resp = json(status, error_body(&message));
    // A refusal by a cap says when to come back.
    if err.fault() == Fault::Capacity {
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(crate::defaults::RETRY_AFTER_SECS),
        );
    }
    resp
}

/// The `{"error": ...}` body, escaped properly.
pub fn error_body(message: &str) -> Bytes {
    let value = serde_json::json!({ "error": message });
    Bytes::from(value.to_string())
}
