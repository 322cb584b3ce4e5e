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

use std::future::Future;
use std::pin::Pin;
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
    /// The app's instructions were not usable. The client is not told why
    /// (channel names, the app's mistakes): the log has the details.
    #[error("the app's GRIP instructions are invalid")]
    Instruct(String),
    /// The app's answer carrying instructions did not finish in time.
    #[error("the app did not finish its answer within {}", humantime::format_duration(*.0))]
    InstructTimeout(Duration),
    /// Its body broke off (already counted by the upstream body).
    #[error("the app's answer could not be read")]
    InstructBroken,
}

impl HttpError for GripError {
    fn status(&self) -> StatusCode {
        match self {
            GripError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GripError::ClientBody(_) | GripError::BodyRead => StatusCode::BAD_REQUEST,
            GripError::Proxy(e) => e.status(),
            GripError::Instruct(_) | GripError::InstructBroken => StatusCode::BAD_GATEWAY,
            GripError::InstructTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn fault(&self) -> Fault {
        match self {
            GripError::BodyTooLarge | GripError::ClientBody(_) | GripError::BodyRead => {
                Fault::Client
            }
            GripError::Proxy(e) => e.fault(),
            GripError::Instruct(_) | GripError::InstructTimeout(_) | GripError::InstructBroken => {
                Fault::Upstream
            }
        }
    }
}

/// Serves one request on a `grip:` route.
///
/// The request's head is taken apart now, before the returned future is
/// first polled: a held request keeps what it needs to be sent again and
/// nothing else (an `async fn` would keep its arguments for its whole life).
pub fn serve<'a, B>(
    req: Request<B>,
    cx: GripContext<'a>,
) -> Pin<Box<dyn Future<Output = Served> + Send + 'a>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<h::BoxError>,
{
    // An upgrade (WebSocket) cannot be held: it is proxied as on any route.
    if proxy::is_upgrade(req.headers()) {
        return Box::pin(async move {
            let forwarded = Box::pin(proxy::forward(
                req,
                cx.caller.clone(),
                cx.upstream,
                cx.timeout,
            ))
            .await;
            Served::Passed(forwarded.unwrap_or_else(|e| failed(GripError::Proxy(e), &cx)))
        });
    }
    let (head, body) = req.into_parts();
    let addr = crate::poll::client_addr(
        cx.caller.peer.addr.ip(),
        &head.headers,
        &cx.config.trusted_proxies,
    );
    let declared = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let resend = Resend::new(head, Bytes::new(), cx.grip);
    Box::pin(held(resend, h::stream(body), declared, addr, cx))
}

/// Asks the app (again, when a hold says so) and holds as it answers.
async fn held(
    mut resend: Resend,
    body: Body,
    declared: Option<u64>,
    addr: std::net::IpAddr,
    cx: GripContext<'_>,
) -> Served {
    // Items published from here on are ones the app's answer may not cover
    // (read from the clock that stamps them: Redis's, with Redis).
    let asked_at = match cx.services.broker.now().await {
        Ok(now) => now,
        Err(_) => {
            cx.services.metrics.broker_error();
            Timestamp::now()
        }
    };
    resend.body = match read_request(declared, body).await {
        Ok(body) => body,
        Err(e) => return Served::Passed(failed(e, &cx)),
    };
    let mut request = hold::Request {
        asked_at,
        addr,
        may_retry: true,
        held_since: None,
    };
    let mut attempt = 0;
    loop {
        // Boxed: a held request should not carry the asking's size.
        let answered = Box::pin(ask(&resend, &cx)).await;
        let hold = match answered {
            Ok(Asked::Pass(resp)) => return Served::Passed(resp),
            Ok(Asked::Hold(hold)) => hold,
            Err(e) => return Served::Passed(failed(e, &cx)),
        };
        request.may_retry = attempt < GRIP_MAX_RETRIES;
        match hold::run(hold, &mut request, &cx).await {
            hold::Ran::Answered(resp) => return Served::Held(resp),
            hold::Ran::Refused(resp) => return Served::Passed(resp),
            hold::Ran::AskAgain { last, after } => {
                attempt += 1;
                resend.last = last;
                // A hint is behind the next answer: do not find it again.
                if let Some(after) = after {
                    request.asked_at = request.asked_at.max(after);
                }
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
        GripError::InstructTimeout(_) => metrics.upstream_error(&cx.upstream.name, "timeout"),
        GripError::BodyTooLarge | GripError::BodyRead | GripError::InstructBroken => {}
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
        // Copied, not moved: the values a parser made share its read buffer,
        // which a held request would otherwise keep (see `format::owned`).
        let mut headers = HeaderMap::with_capacity(head.headers.len() + 1);
        for (name, value) in &head.headers {
            // A held answer is sent as the app made it, with items appended
            // or put in its place: a compressed one could not be (the
            // client's `Accept-Encoding` is not passed on; answers on a
            // `grip:` route travel uncompressed from the app). And only
            // pollgate speaks GRIP to the app: a client cannot forge it.
            if name != http::header::ACCEPT_ENCODING && !instruct::is_grip_header(name) {
                headers.append(name.clone(), format::owned(value));
            }
        }
        let uri = http::Uri::try_from(head.uri.to_string()).unwrap_or(head.uri);
        if let Some(token) = grip.signer.as_ref().and_then(Signer::token) {
            if let Ok(v) = HeaderValue::from_str(&token) {
                headers.insert("grip-sig", v);
            }
        }
        Resend {
            method: head.method,
            uri,
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
        return Ok(Asked::Pass(Response::from_parts(parts, body)));
    }
    let (parts, body) = resp.into_parts();
    let encoded = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(GripError::Instruct(
            "a held answer must not be compressed (Content-Encoding)".into(),
        ));
    }
    // The route timeout bounds the whole read, not only each pause in it:
    // an app that trickles its answer cannot hold the request for ever.
    let read = tokio::time::timeout(cx.timeout, collect(h::stream(body), GRIP_INSTRUCT_BODY_MAX));
    let body = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(Collect::TooLarge)) => {
            return Err(GripError::Instruct(format!(
                "the answer's body is larger than {GRIP_INSTRUCT_BODY_MAX} bytes"
            )))
        }
        Ok(Err(Collect::Failed(_))) => return Err(GripError::InstructBroken),
        Err(_) => return Err(GripError::InstructTimeout(cx.timeout)),
    };
    match instruct::parse(parts.status, &parts.headers, body) {
        Ok(instruct::Instruction::Hold(hold)) => Ok(Asked::Hold(hold)),
        Ok(instruct::Instruction::Respond(spec)) => Ok(Asked::Pass(respond(&spec, None, cx.queue))),
        // `is_grip` said it was: unreachable, but answer sensibly.
        Ok(instruct::Instruction::None) => Err(GripError::Instruct("no instructions".into())),
        Err(e) => Err(GripError::Instruct(e.0)),
    }
}

/// Reads a request body whole, up to `GRIP_REQUEST_BODY_MAX` (refused at
/// once when `Content-Length` already says more).
async fn read_request(declared: Option<u64>, body: Body) -> Result<Bytes, GripError> {
    if declared.is_some_and(|n| n > GRIP_REQUEST_BODY_MAX as u64) {
        return Err(GripError::BodyTooLarge);
    }
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
/// base header of that name). Its body counts in the connection's send
/// queue until taken, as every answer does.
fn respond(
    spec: &ResponseSpec,
    base: Option<&HeaderMap>,
    queue: Option<&Arc<SendQueue>>,
) -> Response<Body> {
    let body = h::Frames::new([spec.body.clone()], queue.cloned());
    let mut resp = Response::new(h::stream(body));
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
