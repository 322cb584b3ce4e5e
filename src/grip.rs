//! GRIP: apps written for Pushpin run behind pollgate unchanged.
//!
//! On a route with `grip:`, a request is forwarded as on any upstream route,
//! with a `Grip-Sig` token, and the app's answer is read for instructions:
//! - none: the answer is passed through (its `Grip-*` headers removed);
//! - `Grip-Hold: response` (or the `application/grip-instruct` JSON): the
//!   request is held on the named channels until an item arrives (its
//!   `http-response` is the answer) or the timeout passes (the app's own
//!   answer is);
//! - `Grip-Hold: stream`: the app's answer goes out at once and each item's
//!   `http-stream` content is appended to it.
//!
//! Items are published through the webhook's `POST /publish/` (EPCP, see
//! `webhook::epcp`) into the same broker as native messages, so holds read
//! them from the channel's buffer by cursor: an item published while the
//! app was still answering is delivered, not lost, and `prev-id` is checked
//! against the buffer before the app is asked again.

mod format;
mod hold;
mod ids;
mod instruct;
mod item;
mod sig;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::answer::{self as h, Body, Fault, HttpError, SendQueue};
use crate::broker::{ChannelName, Timestamp};
use crate::config::Config;
use crate::defaults::{GRIP_INSTRUCT_BODY_MAX, GRIP_MAX_RETRIES, GRIP_REQUEST_BODY_MAX};
use crate::poll::Services;
use crate::proxy::{self, Caller, ProxyError};
use crate::routes::Upstream;
use crate::server::BodyFault;

pub use format::{Action, FormatError, ResponseSpec};
pub use ids::SeenIds;
pub use item::Publish;
pub use sig::Signer;

/// A route's `grip:` settings.
#[derive(Debug, Clone)]
pub struct GripRoute {
    /// Signs `Grip-Sig`; `None` (no key in the environment): no header.
    pub signer: Option<Signer>,
    /// `Grip-Timeout` when the app names none, and the least it may name.
    pub default_timeout: Duration,
    pub min_timeout: Duration,
    /// Longest a stream hold stays open.
    pub stream_max: Duration,
}

/// What serving a request on a `grip:` route needs.
pub struct GripContext<'a> {
    /// The route's name, for metrics.
    pub route: &'a str,
    pub grip: &'a GripRoute,
    pub upstream: &'a Upstream,
    /// The route `timeout`: each request to the app.
    pub timeout: Duration,
    pub caller: Caller<'a>,
    pub config: &'a Config,
    pub services: &'a Services,
    pub queue: Option<&'a Arc<SendQueue>>,
}

/// How a request on a `grip:` route was answered.
pub enum Served {
    /// The app's answer (or an error) went straight back: proxy metrics.
    Passed(Response<Body>),
    /// Held (response or stream): counted as GRIP holds instead.
    Held(Response<Body>),
}

/// Why a request on a `grip:` route failed before any hold.
#[derive(Debug, thiserror::Error)]
pub enum GripError {
    #[error("request body is larger than {GRIP_REQUEST_BODY_MAX} bytes, the most a GRIP route keeps to ask the app again")]
    BodyTooLarge,
    #[error("{0}")]
    ClientBody(BodyFault),
    #[error("could not read the request body")]
    BodyRead,
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The app's instructions were not usable. The client is not told which
    /// app; the log has the details.
    #[error("the app's GRIP instructions are invalid: {0}")]
    Instruct(String),
}

impl HttpError for GripError {
    fn status(&self) -> StatusCode {
        match self {
            GripError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GripError::ClientBody(_) | GripError::BodyRead => StatusCode::BAD_REQUEST,
            GripError::Proxy(e) => e.status(),
            GripError::Instruct(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn fault(&self) -> Fault {
        match self {
            GripError::BodyTooLarge | GripError::ClientBody(_) | GripError::BodyRead => {
                Fault::Client
            }
            GripError::Proxy(e) => e.fault(),
            GripError::Instruct(_) => Fault::Upstream,
        }
    }
}

/// Serves one request on a `grip:` route.
pub async fn serve<B>(req: Request<B>, cx: GripContext<'_>) -> Served
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<h::BoxError>,
{
    // An upgrade (WebSocket) cannot be held: it is proxied as on any route.
    if proxy::is_upgrade(req.headers()) {
        let forwarded = Box::pin(proxy::forward(
            req,
            cx.caller.clone(),
            cx.upstream,
            cx.timeout,
        ))
        .await;
        return Served::Passed(forwarded.unwrap_or_else(|e| failed(GripError::Proxy(e), &cx)));
    }
    // Items published from here on are ones the app's answer may not cover.
    let asked_at = Timestamp::now();
    let (head, body) = req.into_parts();
    let addr = crate::poll::client_addr(
        cx.caller.peer.addr.ip(),
        &head.headers,
        &cx.config.trusted_proxies,
    );
    let body = match read_request(h::stream(body)).await {
        Ok(body) => body,
        Err(e) => return Served::Passed(failed(e, &cx)),
    };
    let mut request = Resend::new(head, body, cx.grip);
    let mut attempt = 0;
    loop {
        let answered = ask(&request, &cx).await;
        let hold = match answered {
            Ok(Asked::Pass(resp)) => return Served::Passed(resp),
            Ok(Asked::Hold(hold)) => hold,
            Err(e) => return Served::Passed(failed(e, &cx)),
        };
        let may_retry = attempt < GRIP_MAX_RETRIES;
        match hold::run(hold, asked_at, addr, may_retry, &cx).await {
            hold::Ran::Answered(resp) => return Served::Held(resp),
            hold::Ran::Refused(resp) => return Served::Passed(resp),
            hold::Ran::AskAgain(last) => {
                attempt += 1;
                request.last = last;
            }
        }
    }
}

/// Counts an error against whoever caused it and renders it.
fn failed(e: GripError, cx: &GripContext<'_>) -> Response<Body> {
    let metrics = &cx.services.metrics;
    match &e {
        GripError::Proxy(p) => p.count(metrics, &cx.upstream.name),
        GripError::ClientBody(BodyFault::Aborted) => {
            metrics.client_error(crate::metrics::ClientError::body_aborted)
        }
        GripError::ClientBody(BodyFault::Stalled) => {
            metrics.client_error(crate::metrics::ClientError::body_timeout)
        }
        GripError::Instruct(why) => {
            metrics.upstream_error(&cx.upstream.name, "grip_instruct");
            tracing::warn!(upstream = %cx.upstream.name, error = %why, "invalid GRIP instructions");
        }
        GripError::BodyTooLarge | GripError::BodyRead => {}
    }
    h::error_response(&e)
}

/// The client's request, kept to be sent to the app again.
struct Resend {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: HeaderMap,
    body: Bytes,
    /// `Grip-Last` to send: (channel, the id the app's answer covered).
    last: Vec<(ChannelName, String)>,
}

impl Resend {
    fn new(head: http::request::Parts, body: Bytes, grip: &GripRoute) -> Resend {
        let mut headers = head.headers;
        // Only pollgate speaks GRIP to the app: a client cannot forge it.
        let client_grip: Vec<HeaderName> = headers
            .keys()
            .filter(|n| instruct::is_grip_header(n))
            .cloned()
            .collect();
        for name in client_grip {
            headers.remove(name);
        }
        if let Some(token) = grip.signer.as_ref().and_then(Signer::token) {
            if let Ok(v) = HeaderValue::from_str(&token) {
                headers.insert("grip-sig", v);
            }
        }
        Resend {
            method: head.method,
            uri: head.uri,
            version: head.version,
            headers,
            body,
            last: Vec::new(),
        }
    }

    fn build(&self) -> Request<Body> {
        let mut req = Request::new(h::full(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        for (channel, id) in &self.last {
            if let Ok(v) = HeaderValue::from_str(&format!("{channel}; last-id={id}")) {
                req.headers_mut().append("grip-last", v);
            }
        }
        req
    }
}

/// What the app answered.
enum Asked {
    Pass(Response<Body>),
    Hold(instruct::Hold),
}

/// Sends the request to the app and reads its instructions, if any.
async fn ask(request: &Resend, cx: &GripContext<'_>) -> Result<Asked, GripError> {
    let started = tokio::time::Instant::now();
    let resp = Box::pin(proxy::forward(
        request.build(),
        cx.caller.clone(),
        cx.upstream,
        cx.timeout,
    ))
    .await?;
    if !instruct::is_grip(resp.headers()) {
        let (mut parts, body) = resp.into_parts();
        let grip: Vec<HeaderName> = parts
            .headers
            .keys()
            .filter(|n| instruct::is_grip_header(n))
            .cloned()
            .collect();
        for name in grip {
            parts.headers.remove(name);
        }
        cx.services.metrics.proxied(
            cx.route,
            parts.status.as_u16(),
            started.elapsed().as_secs_f64(),
        );
        return Ok(Asked::Pass(Response::from_parts(parts, body)));
    }
    let (parts, body) = resp.into_parts();
    let body = match collect(h::stream(body), GRIP_INSTRUCT_BODY_MAX).await {
        Ok(bytes) => bytes,
        Err(Collect::TooLarge) => {
            return Err(GripError::Instruct(format!(
                "the answer's body is larger than {GRIP_INSTRUCT_BODY_MAX} bytes"
            )))
        }
        Err(Collect::Failed(_)) => {
            return Err(GripError::Instruct(
                "the answer's body could not be read".into(),
            ))
        }
    };
    match instruct::parse(parts.status, &parts.headers, body) {
        Ok(instruct::Instruction::Hold(hold)) => Ok(Asked::Hold(hold)),
        Ok(instruct::Instruction::Respond(spec)) => Ok(Asked::Pass(respond(&spec, None))),
        // `is_grip` said it was: unreachable, but answer sensibly.
        Ok(instruct::Instruction::None) => Err(GripError::Instruct("no instructions".into())),
        Err(e) => Err(GripError::Instruct(e.0)),
    }
}

/// Reads a request body whole, up to `GRIP_REQUEST_BODY_MAX`.
async fn read_request(body: Body) -> Result<Bytes, GripError> {
    match collect(body, GRIP_REQUEST_BODY_MAX).await {
        Ok(bytes) => Ok(bytes),
        Err(Collect::TooLarge) => Err(GripError::BodyTooLarge),
        Err(Collect::Failed(e)) => match e.downcast_ref::<BodyFault>() {
            Some(fault) => Err(GripError::ClientBody(*fault)),
            None => Err(GripError::BodyRead),
        },
    }
}

/// Why a body could not be read whole.
enum Collect {
    TooLarge,
    Failed(h::BoxError),
}

/// A whole body, up to `max` bytes (`Limited` would do, but its error
/// conversion keeps the handler's future from being proven `Send`).
async fn collect(mut body: Body, max: usize) -> Result<Bytes, Collect> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Collect::Failed)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(Collect::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A GRIP response as sent to the client, its headers over `base` (the
/// held answer's, as Pushpin merges them: an item's header replaces every
/// base header of that name).
fn respond(spec: &ResponseSpec, base: Option<&HeaderMap>) -> Response<Body> {
    let mut resp = Response::new(h::full(spec.body.clone()));
    *resp.status_mut() = spec.status;
    let headers = resp.headers_mut();
    if let Some(base) = base {
        headers.clone_from(base);
        for name in spec.headers.keys() {
            headers.remove(name);
        }
    }
    for (name, value) in &spec.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.remove(http::header::CONTENT_LENGTH);
    let standard = spec.status.canonical_reason();
    if let Some(reason) = spec.reason.as_deref().filter(|r| Some(*r) != standard) {
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes().to_vec()) {
            resp.extensions_mut().insert(phrase);
        }
    }
    resp
}
