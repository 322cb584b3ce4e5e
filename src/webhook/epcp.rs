//! EPCP publish: `POST /publish/` with `{"items": [...]}` as GRIP libraries
//! send it (`gripcontrol`'s `GripPubControl`, `@fanoutio/grip`'s
//! `Publisher`). Same listener, token, size limit and broker as pollgate's
//! own publishes; answered as Pushpin answers (`Published`, or JSON when
//! the publisher accepts it).

use http::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::Value;

use super::publish::{respond, PublishError};
use super::WebhookContext;
use crate::answer::{self as h, Body};
use crate::grip::Publish;

/// How the publisher wants its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    Text,
    Json,
}

impl Reply {
    /// As Pushpin reads `Accept`: JSON when it names `application/json` or
    /// `application/*`, else text.
    pub(super) fn for_accept(headers: &HeaderMap) -> Reply {
        let json = headers.get_all(ACCEPT).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|t| {
                    let t = t.split(';').next().unwrap_or_default().trim();
                    t.eq_ignore_ascii_case("application/json")
                        || t.eq_ignore_ascii_case("application/*")
                })
            })
        });
        if json {
            Reply::Json
        } else {
            Reply::Text
        }
    }
}

/// A batch is GRIP's when an item carries formats (under `formats` or on
/// the item, as Pushpin reads them); pollgate's own items carry `data`.
pub(super) fn is_grip(value: &Value) -> bool {
    const KEYS: [&str; 4] = ["formats", "http-response", "http-stream", "ws-message"];
    value
        .get("items")
        .and_then(Value::as_array)
        .is_some_and(|items| {
            items
                .iter()
                .any(|i| KEYS.iter().any(|k| i.get(k).is_some()))
        })
}

pub(super) async fn publish(
    value: &Value,
    reply: Reply,
    cx: &WebhookContext<'_>,
) -> Response<Body> {
    let items = match parse(value) {
        Ok(items) => items,
        Err(e) => return respond(Err(e), cx, |_| String::new()),
    };
    let keys: Vec<_> = items
        .iter()
        .map(|p| p.id.clone().map(|id| (p.channel.clone(), id)))
        .collect();
    let fresh = cx.grip_ids.fresh(&keys);
    let batch: Vec<_> = items
        .into_iter()
        .zip(&fresh)
        .filter(|(_, new)| **new)
        .map(|(p, _)| (p.channel, p.prepared))
        .collect();
    let dropped = fresh.iter().filter(|new| !**new).count();
    if dropped > 0 {
        tracing::debug!(dropped, "GRIP items dropped as repeats of a recent id");
    }
    let published = if batch.is_empty() {
        Ok(Vec::new())
    } else {
        cx.broker.publish(&batch, cx.config.buffer).await
    };
    match published {
        Ok(published) => {
            // Stored: a repeat of these ids is now a duplicate.
            cx.grip_ids.remember(keys.into_iter().flatten());
            cx.metrics.published(published.len() as u64, 0);
            acknowledged(reply)
        }
        Err(e) => respond(Err(PublishError::from(e)), cx, |_| String::new()),
    }
}

fn parse(value: &Value) -> Result<Vec<Publish>, PublishError> {
    let items = match value.get("items") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(PublishError::NoItems),
        _ => {
            return Err(PublishError::BatchShape(
                "object does not contain 'items'".into(),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let checked = if item.get("data").is_some() {
                Err(PublishError::Grip(
                    "has `data`: pollgate's own items and GRIP items cannot share a publish".into(),
                ))
            } else {
                Publish::parse(item).map_err(|e| PublishError::Grip(e.0))
            };
            checked.map_err(|e| PublishError::Item {
                index,
                source: Box::new(e),
            })
        })
        .collect()
}

fn acknowledged(reply: Reply) -> Response<Body> {
    match reply {
        Reply::Json => h::json(StatusCode::OK, r#"{"message":"Published"}"#),
        Reply::Text => {
            let mut resp = Response::new(h::full("Published\n"));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp
        }
    }
}
