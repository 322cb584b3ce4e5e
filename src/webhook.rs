//! The internal listener: upstream apps publish here; operators probe health.
//!
//! Never reachable from the public listener: the two listeners have separate
//! routers, so a `POST /publish/...` on the public port is just another
//! request for the route table.

mod epcp;
mod publish;
mod status;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::answer::{self as h, Body, Fault, HttpError};
use crate::broker::{Broker, ChannelName};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::RequestBody;

pub use publish::PublishError;

/// The webhook listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub listen: std::net::SocketAddr,
    /// Largest publish body, in bytes.
    pub max_body: usize,
    /// Bearer token every webhook request but /healthz must carry.
    pub token: Option<Token>,
}

/// A secret. Its `Debug` never shows it, so it cannot leak into a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: String) -> Token {
        Token(secret)
    }

    /// Constant-time comparison against what a client sent.
    pub fn matches(&self, offered: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(offered).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What the webhook handlers need from the running instance.
pub struct WebhookContext<'a> {
    pub broker: &'a Broker,
    pub config: &'a Config,
    pub metrics: &'a Metrics,
    pub shutdown: &'a tokio_util::sync::CancellationToken,
    /// Connections open now, by listener (for `/metrics`).
    pub connections: [(&'static str, usize); 2],
    /// GRIP item ids published lately (EPCP drops repeats).
    pub grip_ids: &'a crate::grip::SeenIds,
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
pub async fn handle(req: Request<RequestBody>, cx: WebhookContext<'_>) -> Response<Body> {
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
    let Some(endpoint) = Endpoint::of(&path) else {
        return h::error_response(&RouteError::NotFound);
    };
    let publishes = matches!(endpoint, Endpoint::Publish(_) | Endpoint::Batch);
    let method_ok = if publishes {
        req.method() == Method::POST
    } else {
        matches!(*req.method(), Method::GET | Method::HEAD)
    };
    if !method_ok {
        let allowed = if publishes { "POST" } else { "GET, HEAD" };
        let mut resp = h::error_response(&RouteError::Method);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
        return resp;
    }
    match endpoint {
        Endpoint::Batch => publish::batch(req, &cx).await,
        Endpoint::Publish(channel) => publish::one(req, channel, &cx).await,
        Endpoint::Healthz => h::json(StatusCode::OK, r#"{"status":"ok"}"#),
        Endpoint::Readyz => readyz(&cx),
        Endpoint::Metrics => metrics(&cx),
        Endpoint::Page => status::page(),
        Endpoint::Status => status::status(req.uri().query(), &cx).await,
        Endpoint::History => status::history(req.uri().query(), &cx),
        Endpoint::Channel(channel) => channel_info(channel, &cx),
    }
}

/// The webhook listener's endpoints, parsed from the path once.
enum Endpoint<'a> {
    Batch,
    Publish(&'a str),
    Healthz,
    Readyz,
    Metrics,
    Page,
    Status,
    History,
    Channel(&'a str),
}

impl<'a> Endpoint<'a> {
    fn of(path: &'a str) -> Option<Endpoint<'a>> {
        Some(match path {
            // With the slash: where GRIP libraries publish (EPCP).
            "/publish" | "/publish/" => Endpoint::Batch,
            "/healthz" => Endpoint::Healthz,
            "/readyz" => Endpoint::Readyz,
            "/metrics" => Endpoint::Metrics,
            "/" => Endpoint::Page,
            "/status" => Endpoint::Status,
            "/status/history" => Endpoint::History,
            p => match (p.strip_prefix("/publish/"), p.strip_prefix("/channels/")) {
                (Some(channel), _) => Endpoint::Publish(channel),
                (_, Some(channel)) => Endpoint::Channel(channel),
                _ => return None,
            },
        })
    }
}

/// `Authorization: Bearer <token>`, compared in constant time.
fn authorized(token: &Token, headers: &http::HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|offered| token.matches(offered))
}

fn metrics(cx: &WebhookContext<'_>) -> Response<Body> {
    let (channels, buffered) = cx.broker.totals();
    let text = cx.metrics.render(crate::metrics::AtScrape {
        channels,
        buffered,
        broker_up: cx.broker.is_ready(),
        log_lines_dropped: crate::logging::dropped_lines(),
        connections: cx.connections,
    });
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
