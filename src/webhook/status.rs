//! The status page (`GET /`) and its data, on the webhook listener. The
//! page has no external assets. Its figures and channel table come from
//! `/status?after=N`, a long poll that answers once more than N messages
//! have been published (or after its timeout); its charts from
//! `/status/history?after=SEQ`, the samples of the metrics' ring newer than
//! SEQ (taken on a timer, so a page costs no work per publish).

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::WebhookContext;
use crate::answer::{self as h, Body};
use crate::defaults::{STATUS_CHANNELS, STATUS_MAX_WAIT, STATUS_SAMPLES, STATUS_SAMPLE_EVERY};

const PAGE: &str = include_str!("status.html");

pub(super) fn page() -> Response<Body> {
    let mut resp = Response::new(h::full(PAGE));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) async fn status(query: Option<&str>, cx: &WebhookContext<'_>) -> Response<Body> {
    let mut after = None;
    let mut wait = Duration::ZERO;
    let mut matching = String::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "after" => after = v.parse::<u64>().ok(),
            "channel" => matching = v.into_owned(),
            "timeout" => {
                let secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .unwrap_or(0.0);
                wait = Duration::from_secs_f64(secs.min(STATUS_MAX_WAIT.as_secs_f64()));
            }
            _ => {}
        }
    }
    if let Some(after) = after {
        let mut activity = cx.metrics.activity();
        // Fewer than `after`: pollgate restarted since the page last
        // asked, and the page should hear so at once.
        let changed = activity.wait_for(|n| *n != after);
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(wait) => {}
            _ = cx.shutdown.cancelled() => {}
        }
    }
    let (channels_total, buffered) = cx.broker.totals();
    let (listed, matched) = cx.broker.channels(STATUS_CHANNELS, &matching);
    let channels: Vec<serde_json::Value> = listed
        .into_iter()
        .map(|(name, info)| serde_json::json!({ "channel": name.as_str(), "waiters": info.waiters, "buffered": info.buffered }))
        .collect();
    let body = serde_json::json!({
        "held": cx.metrics.held(),
        "channels_total": channels_total,
        "buffered": buffered,
        "published": *cx.metrics.activity().borrow(),
        "delivered": cx.metrics.delivered_total(),
        "broker": { "kind": cx.broker.kind(), "ready": cx.broker.is_ready() },
        "matched": matched,
        "channels": channels,
    });
    h::json(StatusCode::OK, body.to_string())
}

/// The charts' samples newer than `after` (every sample kept without it).
pub(super) fn history(query: Option<&str>, cx: &WebhookContext<'_>) -> Response<Body> {
    let after = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "after")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0);
    let body = serde_json::json!({
        "started": cx.metrics.started(),
        "interval_ms": STATUS_SAMPLE_EVERY.as_millis(),
        "capacity": STATUS_SAMPLES,
        "samples": cx.metrics.history(after),
    });
    h::json(StatusCode::OK, body.to_string())
}
