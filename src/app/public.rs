//! The public listener's requests: each is routed once (the lean path asks
//! first, hyper's path for the rest), then proxied or held, and logged.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use tracing::info;

use super::{Active, Shared};
use crate::answer::{self as h, Body, Fault, HttpError};
use crate::grip::{self, GripContext, Served};
use crate::poll::{self, PollContext};
use crate::proxy::{self, Peer};
use crate::routes::{NoRoute, Route, RouteAction};
use crate::server::{ConnInfo, Lean, LeanFuture, LeanRequest, RequestBody};

/// Errors of the public router itself.
#[derive(Debug, thiserror::Error)]
enum RouteError {
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed on this route")]
    Method,
}

impl HttpError for RouteError {
    fn status(&self) -> StatusCode {
        match self {
            RouteError::NotFound => StatusCode::NOT_FOUND,
            RouteError::Method => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn fault(&self) -> Fault {
        match self {
            RouteError::NotFound | RouteError::Method => Fault::Client,
        }
    }
}

/// The lean HTTP/1 path serves long polls and GRIP routes (whose requests
/// may be held): a held request then costs no hyper connection buffers (see
/// `server/lean.rs`). One route lookup decides.
pub(super) fn lean_polls(shared: &Arc<Shared>) -> Lean {
    let shared = shared.clone();
    Lean {
        serve: Arc::new(move |req, conn| lean_request(&shared, req, conn)),
    }
}

fn lean_request(shared: &Arc<Shared>, req: LeanRequest, conn: ConnInfo) -> Option<LeanFuture> {
    let active = shared.active.load_full();
    let found = active
        .config
        .routes
        .find(req.method(), request_host(&req), req.uri().path());
    let route = match found {
        Ok(route) if matches!(route.action, RouteAction::Poll(_)) => route.clone(),
        // A GRIP route's GET may be held; anything else there is an app's
        // answer passed through, which hyper frames (HEAD, 204, 304...).
        Ok(route)
            if req.method() == http::Method::GET
                && matches!(route.action, RouteAction::Proxy { grip: Some(_), .. }) =>
        {
            route.clone()
        }
        _ => return None,
    };
    Some(Box::pin(routed(shared.clone(), active, route, req, conn)))
}

pub(super) async fn public_request(
    shared: Arc<Shared>,
    req: Request<RequestBody>,
    conn: ConnInfo,
) -> Response<Body> {
    let active = shared.active.load_full();
    let found = active
        .config
        .routes
        .find(req.method(), request_host(&req), req.uri().path())
        .cloned();
    match found {
        Ok(route) => routed(shared, active, route, req, conn).await,
        Err(no_route) => {
            let resp = match no_route {
                NoRoute::NotFound => h::error_response(&RouteError::NotFound),
                NoRoute::MethodNotAllowed(allowed) => {
                    let mut resp = h::error_response(&RouteError::Method);
                    let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
                    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                        resp.headers_mut().insert(header::ALLOW, v);
                    }
                    resp
                }
            };
            let started = tokio::time::Instant::now();
            access_log(
                req.method(),
                req.uri().path(),
                conn.peer,
                None,
                &resp,
                started,
            );
            resp
        }
    }
}

/// Serves a request on the route it was matched to (looked up once,
/// under `active`).
async fn routed<B>(
    shared: Arc<Shared>,
    active: Arc<Active>,
    route: Arc<Route>,
    req: Request<B>,
    conn: ConnInfo,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<h::BoxError>,
{
    let started = tokio::time::Instant::now();
    let method = req.method().clone();
    // A clone of the URI shares its bytes: no copy of the path per request.
    let uri = req.uri().clone();
    let peer = Peer {
        addr: conn.peer,
        proto: if conn.tls { "https" } else { "http" },
    };
    let resp = match &route.action {
        RouteAction::Proxy {
            upstream,
            timeout,
            grip: Some(grip),
        } => {
            let cx = GripContext {
                route: &route.name,
                grip,
                upstream,
                timeout: *timeout,
                caller: proxy::Caller {
                    clients: &active.clients,
                    peer,
                    metrics: &shared.services.metrics,
                    slot: conn.slot.clone(),
                },
                config: &active.config,
                services: &shared.services,
                queue: conn.queue.as_ref(),
            };
            // Answers that pass straight through count as proxied; held
            // ones as GRIP holds (their time is the hold's, not the app's).
            match grip::serve(req, cx).await {
                Served::Passed(resp) => {
                    let head = started.elapsed().as_secs_f64();
                    let metrics = &shared.services.metrics;
                    metrics.proxied(&route.name, resp.status().as_u16(), head);
                    resp
                }
                Served::Held(resp) => resp,
            }
        }
        RouteAction::Proxy {
            upstream, timeout, ..
        } => {
            // Boxed: an idle held poll should not carry a proxy future's size.
            let forwarded = Box::pin(proxy::forward(
                req,
                proxy::Caller {
                    clients: &active.clients,
                    peer,
                    metrics: &shared.services.metrics,
                    slot: conn.slot.clone(),
                },
                upstream,
                *timeout,
            ))
            .await;
            let resp = forwarded.unwrap_or_else(|e| {
                e.count(&shared.services.metrics, &upstream.name);
                h::error_response(&e)
            });
            let head = started.elapsed().as_secs_f64();
            shared
                .services
                .metrics
                .proxied(&route.name, resp.status().as_u16(), head);
            resp
        }
        RouteAction::Poll(poll_route) => {
            let rest = uri.path().get(route.prefix.len()..).unwrap_or_default();
            let cx = PollContext {
                route: &route.name,
                config: &active.config,
                services: &shared.services,
                clients: &active.clients,
                peer,
                queue: conn.queue.as_ref(),
            };
            Box::pin(poll::handle(req, poll_route, rest, cx)).await
        }
    };
    access_log(&method, uri.path(), conn.peer, Some(&route), &resp, started);
    resp
}

/// One line per public request, under the target `pollgate::access`.
fn access_log(
    method: &http::Method,
    path: &str,
    peer: std::net::SocketAddr,
    route: Option<&Route>,
    resp: &Response<Body>,
    started: tokio::time::Instant,
) {
    let upstream = route.and_then(|r| match &r.action {
        RouteAction::Proxy { upstream, .. } => Some(upstream.name.as_str()),
        RouteAction::Poll(_) => None,
    });
    info!(
        target: "pollgate::access",
        method = %method,
        path = %path,
        peer = %peer,
        route = route.map_or("-", |r| r.name.as_str()),
        upstream = upstream.unwrap_or("-"),
        status = resp.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
}

/// The host the client addressed, without port: the Host header, or the
/// HTTP/2 `:authority`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?,
        None => req.uri().host()?,
    };
    Some(strip_port(raw))
}

/// "example.com:8080" -> "example.com"; "[::1]:80" -> "[::1]".
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
