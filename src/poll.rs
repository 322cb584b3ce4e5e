//! Long polls: a request on a poll route is held here until a message newer
//! than its cursor is on its channel, its timeout passes, or pollgate shuts
//! down. Never forwards anything upstream.
//!
//! A held poll is only this future: one broker subscription (a `watch`
//! receiver), one timer, and a clone of the shutdown token. No task, no
//! polling loop. Dropping the future (the client went away) frees all three.

mod admit;
mod authorize;
mod conclude;
mod cors;
mod identity;
mod params;
mod render;
mod sse;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use std::future::Future;
use std::sync::Arc;

use crate::answer::{self as h, Body, Fault, HttpError, QueueClosed, SendQueue};
use crate::broker::{Broker, BrokerError, Cursor, Timestamp};
use crate::config::Config;
use crate::metrics::{HeldGuard, Metrics, PollOutcome};

use crate::proxy::{Caller, Clients, Peer, ProxyError};
use crate::routes::PollRoute;
use conclude::{conclude, deliver, Ending, OutcomeGuard};

pub use admit::{Admission, LimitError, Limits, Permit};
pub use authorize::Authorizer;
pub use identity::{address_key, client_addr, BadClientId, ClientIdSource};
pub use params::{ParamError, PollConfig, PollParams};

/// What a poll handler needs from the running instance.
pub struct PollContext<'a> {
    /// The route's name, for metrics.
    pub route: &'a str,
    /// The snapshot this request runs under.
    pub config: &'a Config,
    pub services: &'a Services,
    pub clients: &'a Clients,
    pub peer: Peer,
    /// The connection's send queue (HTTP/2 and hyper's HTTP/1; the lean
    /// path writes one answer at a time and needs none).
    pub queue: Option<&'a Arc<SendQueue>>,
}

/// The running instance's parts a poll uses, owned by the instance and
/// borrowed by each poll as one reference (a held poll carries it).
pub struct Services {
    pub broker: Broker,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
    pub admission: Arc<Admission>,
    pub authorizer: Authorizer,
}

/// Why a poll was not held.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("method not allowed on a poll route: use GET")]
    Method,
    #[error("broker unavailable")]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    ClientId(#[from] BadClientId),
    #[error("authorization check failed: the app answered {0}")]
    AuthStatus(StatusCode),
    /// The app could not be asked. The answer says why without naming the
    /// upstream (a poll answer never does); the log has the whole error.
    #[error("authorization check failed: {}", auth_reason(.0))]
    AuthUpstream(ProxyError),
    /// The app refused (401/403); its own answer is passed to the client.
    #[error("not authorized")]
    Denied(Box<Response<Body>>),
}

impl HttpError for PollError {
    fn status(&self) -> StatusCode {
        match self {
            PollError::Param(_) | PollError::ClientId(_) => StatusCode::BAD_REQUEST,
            PollError::Method => StatusCode::METHOD_NOT_ALLOWED,
            PollError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
            PollError::Limit(_) => StatusCode::TOO_MANY_REQUESTS,
            PollError::AuthStatus(_) => StatusCode::BAD_GATEWAY,
            PollError::AuthUpstream(e) => e.status(),
            PollError::Denied(resp) => resp.status(),
        }
    }

    fn fault(&self) -> Fault {
        match self {
            PollError::Param(_)
            | PollError::Method
            | PollError::ClientId(_)
            | PollError::Denied(_) => Fault::Client,
            PollError::Limit(_) => Fault::Capacity,
            PollError::Broker(_) | PollError::AuthStatus(_) => Fault::Upstream,
            // Whoever the proxy blames: the app, or a cap that shed it.
            PollError::AuthUpstream(e) => e.fault(),
        }
    }
}

/// Why the authorization check could not be made, in the client's words.
fn auth_reason(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::Timeout { .. } => "the app did not answer in time",
        ProxyError::Shed { .. } => "the app is busy, retry shortly",
        ProxyError::Connect { .. }
        | ProxyError::Failed { .. }
        | ProxyError::Unconfigured(_)
        | ProxyError::BadTarget(_)
        | ProxyError::ClientBody(_) => "the app could not be asked",
    }
}

/// Serves one request on a poll route; `rest` is the path after the prefix.
///
/// Everything that needs the request (parameters, client id, limits) runs
/// now, before the returned future is first polled: the future keeps only
/// what a held poll needs, not the request's head. (An `async fn` would
/// carry its arguments in every state, the head included, for the whole
/// hold: measured, that made a held poll's future 1,960 bytes.)
pub fn handle<'a, B>(
    req: Request<B>,
    route: &'a PollRoute,
    rest: &str,
    cx: PollContext<'a>,
) -> impl Future<Output = Response<Body>> + Send + 'a {
    let (head, _body) = req.into_parts();
    let origin: Option<Box<str>> = route.cors.as_ref().and_then(|_| {
        head.headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(Box::from)
    });
    let step = match head.method {
        Method::OPTIONS => Step::Answered(Box::new(cors::preflight(
            &head.headers,
            route.cors.as_ref(),
        ))),
        Method::GET | Method::HEAD => {
            let stream =
                head.method == Method::GET && route.sse && sse::wire::wants_stream(&head.headers);
            let drive = match head.version {
                http::Version::HTTP_2 => sse::Drive::Task,
                _ => sse::Drive::Body,
            };
            match admit(head, route, rest, &cx, stream) {
                Ok(ticket) if stream => Step::Stream(ticket, drive),
                Ok(ticket) => Step::Admitted(ticket),
                Err(e) => Step::Answered(Box::new(rejected(e, &cx))),
            }
        }
        _ => {
            let mut resp = h::error_response(&PollError::Method);
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            Step::Answered(Box::new(resp))
        }
    };
    async move {
        let mut resp = match step {
            Step::Answered(resp) => *resp,
            Step::Admitted(mut ticket) => match hold(&mut ticket, route, &cx).await {
                Ok(resp) => resp,
                Err(e) => rejected(e, &cx),
            },
            // Boxed: opening runs once, and a held poll should not carry it.
            Step::Stream(ticket, drive) => {
                match Box::pin(sse::open(ticket, drive, route, &cx)).await {
                    Ok(resp) => resp,
                    Err(e) => rejected(e, &cx),
                }
            }
        };
        if let (Some(cors), Some(origin)) = (route.cors.as_ref(), origin.as_deref()) {
            cors::allow_origin(resp.headers_mut(), cors, origin);
        }
        resp
    }
}

/// Where a poll request stands once its head has been read.
enum Step {
    /// Answered without holding (preflight, refusal). Boxed: rare, and a
    /// held poll should not carry a response's size.
    Answered(Box<Response<Body>>),
    Admitted(Ticket),
    /// Admitted, and asks for an event stream.
    Stream(Ticket, sse::Drive),
}

/// An admitted poll: what holding it needs (its channel is its permit's).
struct Ticket {
    params: PollParams,
    permit: Permit,
    /// The request's headers, kept only for a route that asks the app.
    authorize: Option<Box<HeaderMap>>,
    /// The held gauge's share, from the moment the hold starts. The last
    /// field, so it drops after `permit`: once the gauge says a poll is gone,
    /// its slot under the limits is free too (the other way round, a client
    /// that saw the gauge drop could be refused a slot still being freed).
    held: Option<HeldGuard>,
}

/// Validates a poll request and takes its slot under the limits.
fn admit(
    head: http::request::Parts,
    route: &PollRoute,
    rest: &str,
    cx: &PollContext<'_>,
    stream: bool,
) -> Result<Ticket, PollError> {
    let channel = params::channel(rest)?;
    let mut params = params::parse(head.uri.query(), &cx.config.poll)?;
    if stream {
        // A reconnecting `EventSource` names where it stopped; that wins
        // over the `since` its URL still carries from the first connect.
        if let Some(cursor) = sse::last_event_id(&head.headers)? {
            params.cursor = Some(cursor);
        }
    }
    let addr = identity::client_addr(cx.peer.addr.ip(), &head.headers, &cx.config.trusted_proxies);
    let source = route.client_id.as_ref().unwrap_or(&cx.config.client_id);
    let client = identity::client_id(source, &head.headers, addr)?;
    // Limits first: cheap, and they shield the authorization upstream too.
    let permit = cx.services.admission.admit(
        client,
        identity::address_key(addr),
        &channel,
        cx.config.limits,
    )?;
    Ok(Ticket {
        params,
        permit,
        authorize: route.authorize.as_ref().map(|_| Box::new(head.headers)),
        held: None,
    })
}

/// The answer to a poll that was not held, and its metrics.
fn rejected(e: PollError, cx: &PollContext<'_>) -> Response<Body> {
    match e {
        PollError::Limit(limit) => {
            cx.services.metrics.poll_ended(PollOutcome::rejected_limit);
            cx.services.metrics.limit_refused(limit.label());
            if let Some(suppressed) = cx.services.admission.should_log() {
                tracing::warn!(limit = %limit, suppressed, "poll refused by a limit");
            }
            h::error_response(&PollError::Limit(limit))
        }
        PollError::Denied(resp) => {
            cx.services
                .metrics
                .poll_ended(PollOutcome::rejected_invalid);
            *resp
        }
        PollError::Broker(_) => {
            cx.services.metrics.poll_ended(PollOutcome::error);
            cx.services.metrics.broker_error();
            h::error_response(&e)
        }
        other => {
            cx.services
                .metrics
                .poll_ended(PollOutcome::rejected_invalid);
            h::error_response(&other)
        }
    }
}

/// Asks the app whether this client may poll this channel (routes with
/// `authorize`).
async fn authorize(
    ticket: &Ticket,
    headers: &HeaderMap,
    route: &PollRoute,
    cx: &PollContext<'_>,
) -> Result<(), PollError> {
    let Some(auth) = &route.authorize else {
        return Ok(());
    };
    // Boxed: the subrequest's future is large and only some routes need it.
    let caller = Caller {
        clients: cx.clients,
        peer: cx.peer,
        metrics: &cx.services.metrics,
        slot: None,
    };
    let checked = Box::pin(cx.services.authorizer.check(
        auth,
        caller,
        headers,
        ticket.permit.channel(),
        ticket.permit.client(),
    ))
    .await;
    match checked {
        Ok(()) => Ok(()),
        Err(authorize::AuthError::Denied(resp)) => Err(PollError::Denied(Box::new(resp))),
        Err(authorize::AuthError::Unexpected(status)) => Err(PollError::AuthStatus(status)),
        Err(authorize::AuthError::Upstream(e)) => {
            e.count(&cx.services.metrics, &auth.upstream.name);
            tracing::warn!(error = %e, "poll authorization check failed");
            Err(PollError::AuthUpstream(e))
        }
    }
}

/// Holds an admitted poll until it can be answered, after asking the app
/// first if the route says so. The ticket, and with it the poll's slot
/// under the limits, is the caller's until the answer is out.
async fn hold(
    ticket: &mut Ticket,
    route: &PollRoute,
    cx: &PollContext<'_>,
) -> Result<Response<Body>, PollError> {
    if let Some(headers) = ticket.authorize.take() {
        // The headers are for the check only: freed before the hold.
        authorize(ticket, &headers, route, cx).await?;
    }
    // Read from the config each time, not copied: a held poll stays small.
    let buffer = || cx.config.buffer;
    let mut sub = cx
        .services
        .broker
        .subscribe(ticket.permit.channel(), buffer());
    let cursor = match ticket.params.cursor {
        Some(c) => c,
        None => Cursor::After(sub.head(buffer()).await?),
    };
    // In the ticket, which outlives this future: by the time the held gauge
    // goes down, the poll's outcome is counted and its slot is free.
    ticket.held = Some(cx.services.metrics.hold(cx.route));
    let params = &ticket.params;
    let max = || params.max.unwrap_or(1);
    let mut outcome = OutcomeGuard::new(&cx.services.metrics);
    let deadline = tokio::time::sleep(params.timeout);
    tokio::pin!(deadline);

    let end = loop {
        // In a block: a read's messages are not kept while waiting.
        {
            // A broker that cannot be read right now leaves the poll held: the
            // broker wakes every waiter when it is back, and the deadline still
            // ends the hold with a timeout that hands the cursor back unchanged.
            // One clock reading per read: the buffer's age limit and the
            // delivery latency both use it (a clock read is not free on a VM).
            let now = Timestamp::now();
            let read = match sub.read(cursor, max(), buffer(), now).await {
                Ok(read) => read,
                Err(_) => {
                    cx.services.metrics.broker_error();
                    crate::broker::Read::default()
                }
            };
            if !read.messages.is_empty() {
                if let Some(queue) = cx.queue.filter(|q| q.is_full()) {
                    // The connection has answers enough waiting: render this
                    // one once it drains.
                    drop(read);
                    match Box::pin(room(queue, &cx.services.shutdown)).await {
                        Room::Free => continue,
                        // Shutdown answers at once: one answer past the
                        // bound, no more (waiting again would spin).
                        Room::ShuttingDown => break Ending::Shutdown,
                        // The connection ended first (the stall watch closed
                        // it): render nothing, the server drops this request
                        // with its connection.
                        Room::Closed => {
                            std::future::pending::<()>().await;
                            continue;
                        }
                    }
                }
                outcome.set(if read.gap {
                    PollOutcome::gap
                } else {
                    PollOutcome::message
                });
                return Ok(deliver(&read, params.max.is_some(), cx, now));
            }
            if read.gap {
                // Nothing left to send, but the client must learn it missed some.
                break Ending::Gap;
            }
        }
        tokio::select! {
            biased;
            _ = sub.changed() => continue,
            _ = &mut deadline => break Ending::Deadline,
            _ = cx.services.shutdown.cancelled() => break Ending::Shutdown,
        }
    };
    // Boxed: it runs once per poll, and a held poll should not carry its size.
    Ok(Box::pin(conclude(
        &sub,
        ticket.permit.channel(),
        cursor,
        params,
        cx,
        &mut outcome,
        end,
    ))
    .await)
}

/// What ended a wait for room in the connection's send queue.
enum Room {
    Free,
    ShuttingDown,
    Closed,
}

/// Waits until the connection's send queue has room, shutdown, or the
/// connection's end.
async fn room(queue: &SendQueue, shutdown: &CancellationToken) -> Room {
    tokio::select! {
        room = queue.room() => match room {
            Ok(()) => Room::Free,
            Err(QueueClosed) => Room::Closed,
        },
        _ = shutdown.cancelled() => Room::ShuttingDown,
    }
}
