//! `POST /publish/{channel}` and `POST /publish` (batch).
//!
//! A publish is all or nothing: the body is read (bounded by
//! `webhook.max_body`) and every item checked before the broker sees any.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use super::WebhookContext;
use crate::answer::{self as h, Body, Fault, HttpError};
use crate::broker::{
    BrokerError, ChannelName, ChannelNameError, PrepareError, Prepared, Published,
};
use crate::metrics::ClientError;
use crate::server::{BodyFault, RequestBody};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid channel: {0}")]
    Channel(#[from] ChannelNameError),
    #[error("body is larger than webhook.max_body ({0} bytes)")]
    TooLarge(usize),
    #[error("could not read the body")]
    Read,
    #[error("{0}")]
    ClientBody(BodyFault),
    #[error("{0}")]
    Body(#[from] PrepareError),
    #[error("items[{index}]: {source}")]
    Item {
        index: usize,
        #[source]
        source: Box<PublishError>,
    },
    #[error("body must be {{\"items\": [{{\"channel\": \"...\", \"data\": {{...}}}}, ...]}}: {0}")]
    BatchShape(String),
    #[error("items is empty")]
    NoItems,
    /// A GRIP (EPCP) item that is not valid.
    #[error("{0}")]
    Grip(String),
    #[error("broker unavailable")]
    Broker(#[from] BrokerError),
}

impl HttpError for PublishError {
    fn status(&self) -> StatusCode {
        match self {
            PublishError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PublishError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
            PublishError::Item { source, .. } => source.status(),
            PublishError::Channel(_)
            | PublishError::Read
            | PublishError::ClientBody(_)
            | PublishError::Body(_)
            | PublishError::BatchShape(_)
            | PublishError::Grip(_)
            | PublishError::NoItems => StatusCode::BAD_REQUEST,
        }
    }

    fn fault(&self) -> Fault {
        match self {
            PublishError::Broker(_) => Fault::Upstream,
            PublishError::Item { source, .. } => source.fault(),
            PublishError::Channel(_)
            | PublishError::TooLarge(_)
            | PublishError::Read
            | PublishError::ClientBody(_)
            | PublishError::Body(_)
            | PublishError::BatchShape(_)
            | PublishError::Grip(_)
            | PublishError::NoItems => Fault::Client,
        }
    }
}

pub(super) fn channel(raw: &str) -> Result<ChannelName, PublishError> {
    Ok(ChannelName::from_path(raw)?)
}

pub(super) async fn one(
    req: Request<RequestBody>,
    raw_channel: &str,
    cx: &WebhookContext<'_>,
) -> Response<Body> {
    let result = async {
        let channel = channel(raw_channel)?;
        let body = read_body(req, cx.config.webhook.max_body).await?;
        let prepared = Prepared::from_json(&body)?;
        let published = cx
            .broker
            .publish(&[(channel, prepared)], cx.config.buffer)
            .await?;
        Ok::<_, PublishError>(published)
    }
    .await;
    respond(result, cx, |published| match published.first() {
        Some(p) => format!(
            "{{\"status\":\"published\",\"message_id\":\"{}\",\"timestamp\":{}}}",
            p.id, p.timestamp
        ),
        None => r#"{"status":"published"}"#.to_owned(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    items: Vec<BatchItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    channel: String,
    data: serde_json::Value,
}

/// `POST /publish`: pollgate's own batch, or (items with formats instead
/// of `data`) a GRIP publish as Pushpin takes it.
pub(super) async fn batch(req: Request<RequestBody>, cx: &WebhookContext<'_>) -> Response<Body> {
    let accept = super::epcp::Reply::for_accept(req.headers());
    let body = match read_body(req, cx.config.webhook.max_body).await {
        Ok(body) => body,
        Err(e) => return respond(Err(e), cx, |_| String::new()),
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return respond(Err(PublishError::BatchShape(e.to_string())), cx, |_| {
                String::new()
            })
        }
    };
    if super::epcp::is_grip(&value) {
        return super::epcp::publish(&value, accept, cx).await;
    }
    let result = async {
        let parsed: BatchBody =
            serde_json::from_value(value).map_err(|e| PublishError::BatchShape(e.to_string()))?;
        if parsed.items.is_empty() {
            return Err(PublishError::NoItems);
        }
        let items = parsed
            .items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let checked = ChannelName::parse(&item.channel)
                    .map_err(PublishError::from)
                    .and_then(|c| Ok((c, Prepared::from_value(item.data)?)));
                checked.map_err(|e| PublishError::Item {
                    index,
                    source: Box::new(e),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(cx.broker.publish(&items, cx.config.buffer).await?)
    }
    .await;
    respond(result, cx, |published| {
        let items: Vec<String> = published
            .iter()
            .map(|p| {
                format!(
                    "{{\"channel\":\"{}\",\"message_id\":\"{}\",\"timestamp\":{}}}",
                    p.channel, p.id, p.timestamp
                )
            })
            .collect();
        format!(
            "{{\"status\":\"published\",\"count\":{},\"items\":[{}]}}",
            items.len(),
            items.join(",")
        )
    })
}

pub(super) fn respond(
    result: Result<Vec<Published>, PublishError>,
    cx: &WebhookContext<'_>,
    render: impl FnOnce(&[Published]) -> String,
) -> Response<Body> {
    match result {
        Ok(published) => {
            cx.metrics.published(published.len() as u64, 0);
            h::json(StatusCode::OK, render(&published))
        }
        Err(e) => {
            cx.metrics.published(0, 1);
            match e {
                PublishError::ClientBody(BodyFault::Aborted) => {
                    cx.metrics.client_error(ClientError::body_aborted)
                }
                PublishError::ClientBody(BodyFault::Stalled) => {
                    cx.metrics.client_error(ClientError::body_timeout)
                }
                _ => {}
            }
            h::error_response(&e)
        }
    }
}

/// Reads the whole body, refusing more than `max` bytes (before reading, when
/// Content-Length already says so).
async fn read_body(req: Request<RequestBody>, max: usize) -> Result<Bytes, PublishError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(PublishError::TooLarge(max));
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(PublishError::TooLarge(max)),
        Err(e) => match e.downcast_ref::<BodyFault>() {
            Some(fault) => Err(PublishError::ClientBody(*fault)),
            None => Err(PublishError::Read),
        },
    }
}
