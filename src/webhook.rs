//! The internal listener: upstream apps publish here; operators probe health.
//!
//! Never reachable from the public listener: the two listeners have separate
//! routers, so a `POST /publish/...` on the public port is just another
//! request for the route table.

mod publish;
mod status;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::broker::{Broker, ChannelName};
use crate::config::Config;
use crate::http::{self as h, Body, Fault, HttpError};
use crate::metrics::Metrics;

pub use publish::PublishError;

/// What the webhook handlers need from the running instance.
pub struct WebhookContext<'a> {
    pub broker: &'a Broker,
    pub config: &'a Config,
    pub metrics: &'a Metrics,
    pub shutdown: &'a tokio_util::sync::CancellationToken,
}

/// Errors of the webhook router itself.
#[derive(Debug, thiserror::Error)]
enum RouteError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    Method,
    #[error("unknown channel")]
    UnknownChannel,
    #[error("missing or invalid bearer token")]
    Unauthorized,
}

impl HttpError for RouteError {
    fn status(&self) -> StatusCode {
        match self {
            RouteError::NotFound | RouteError::UnknownChannel => StatusCode::NOT_FOUND,
            RouteError::Method => StatusCode::METHOD_NOT_ALLOWED,
            RouteError::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }

    fn fault(&self) -> Fault {
        match self {
            RouteError::NotFound
            | RouteError::Method
            | RouteError::UnknownChannel
            | RouteError::Unauthorized => Fault::Client,
        }
    }
}

/// Routes one webhook request.
pub async fn handle(req: Request<Incoming>, cx: WebhookContext<'_>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if let Some(token) = &cx.config.webhook.token {
        // Liveness probes carry no credentials; everything else does.
        if path != "/healthz" && !authorized(token, req.headers()) {
            let mut resp = h::error_response(&RouteError::Unauthorized);
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    let method = req.method().clone();
    let (allowed, resp) = match path.as_str() {
        "/publish" => ("POST", (method == Method::POST).then_some(())),
        "/" | "/status" | "/healthz" | "/readyz" | "/metrics" => (
            "GET, HEAD",
            matches!(method, Method::GET | Method::HEAD).then_some(()),
        ),
        p if p.starts_with("/publish/") => ("POST", (method == Method::POST).then_some(())),
        p if p.starts_with("/channels/") => (
            "GET, HEAD",
            matches!(method, Method::GET | Method::HEAD).then_some(()),
        ),
        _ => return h::error_response(&RouteError::NotFound),
    };
    if resp.is_none() {
        let mut resp = h::error_response(&RouteError::Method);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
        return resp;
    }
    match path.as_str() {
        "/publish" => publish::batch(req, &cx).await,
        "/healthz" => h::json(StatusCode::OK, r#"{"status":"ok"}"#),
        "/readyz" => readyz(&cx),
        "/metrics" => metrics(&cx),
        "/" => status::page(),
        "/status" => status::status(req.uri().query(), &cx).await,
        p => match (p.strip_prefix("/publish/"), p.strip_prefix("/channels/")) {
            (Some(channel), _) => publish::one(req, channel, &cx).await,
            (_, Some(channel)) => channel_info(channel, &cx),
            _ => h::error_response(&RouteError::NotFound),
        },
    }
}

/// `Authorization: Bearer <token>`, compared in constant time.
fn authorized(token: &crate::config::Token, headers: &http::HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|offered| token.matches(offered))
}

fn metrics(cx: &WebhookContext<'_>) -> Response<Body> {
    let (channels, buffered) = cx.broker.totals();
    let text = cx.metrics.render(channels, buffered, cx.broker.is_ready());
    let mut resp = Response::new(h::full(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn readyz(cx: &WebhookContext<'_>) -> Response<Body> {
    if cx.broker.is_ready() {
        h::json(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        h::json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"not ready","error":"broker unavailable"}"#,
        )
    }
}

fn channel_info(raw: &str, cx: &WebhookContext<'_>) -> Response<Body> {
    let channel = match publish::channel(raw) {
        Ok(c) => c,
        Err(e) => return h::error_response(&e),
    };
    match cx.broker.info(&channel) {
        Some(info) => h::json(StatusCode::OK, info_body(&channel, &info)),
        None => h::error_response(&RouteError::UnknownChannel),
    }
}

fn info_body(channel: &ChannelName, info: &crate::broker::ChannelInfo) -> String {
    let last = info
        .last_timestamp
        .map_or_else(|| "null".to_owned(), |t| t.to_string());
    format!(
        "{{\"channel\":\"{channel}\",\"waiters\":{},\"buffered\":{},\"last_timestamp\":{last}}}",
        info.waiters, info.buffered
    )
}
