//! `pollgate publish` and `pollgate tail`: the wire contract from a shell.
//!
//! Both speak plain HTTP(S) to a running pollgate, exactly as an app or a
//! browser would; nothing here touches pollgate's internals.

use std::io::Write;
use std::time::Duration;

use crate::defaults::{TAIL_BACKOFF_MAX, TAIL_BACKOFF_MIN};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type CliClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What went wrong, as the user should read it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid URL {0:?}")]
    Url(String),
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the answer failed: {0}")]
    Body(#[from] hyper::Error),
    #[error("pollgate answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// A channel name as one URL path segment.
fn segment(channel: &str) -> String {
    percent_encoding::utf8_percent_encode(channel, percent_encoding::NON_ALPHANUMERIC).collect()
}

fn client() -> CliClient {
    let (tls, _) = crate::tls::client_config(crate::tls::Roots::System);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

async fn send(
    client: &CliClient,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), CliError> {
    let url = req.uri().to_string();
    let resp = client
        .request(req)
        .await
        .map_err(|source| CliError::Connect { url, source })?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Publishes `json` to `channel`; returns (message id, timestamp).
///
/// # Errors
/// See [`CliError`]; a non-200 answer carries pollgate's error text.
pub async fn publish(
    webhook: &str,
    token: Option<&str>,
    channel: &str,
    json: String,
) -> Result<(String, String), CliError> {
    let url = format!(
        "{}/publish/{}",
        webhook.trim_end_matches('/'),
        segment(channel)
    );
    let mut req = Request::post(&url).header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(json)))
        .map_err(|_| CliError::Url(url.clone()))?;
    let (status, body) = send(&client(), req).await?;
    if status != StatusCode::OK {
        return Err(CliError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| CliError::Answer(e.to_string()))?;
    match (v["message_id"].as_str(), v.get("timestamp")) {
        (Some(id), Some(ts)) => Ok((id.to_owned(), ts.to_string())),
        _ => Err(CliError::Answer(
            String::from_utf8_lossy(&body).into_owned(),
        )),
    }
}

/// `GET url` succeeds with 200: a probe for containers whose health port
/// is loopback-only.
///
/// # Errors
/// See [`CliError`].
pub async fn probe(url: &str) -> Result<(), CliError> {
    let req = Request::get(url)
        .body(Full::default())
        .map_err(|_| CliError::Url(url.to_owned()))?;
    match send(&client(), req).await? {
        (StatusCode::OK, _) => Ok(()),
        (status, body) => Err(CliError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }),
    }
}

/// Follows `channel`, writing each message's data as one JSON line to `out`,
/// carrying the cursor across reconnects and backing off on errors. Runs
/// until `out` fails (the reader went away).
pub async fn tail(base: &str, channel: &str, since: Option<String>, mut out: impl Write) {
    let client = client();
    let base = format!("{}/{}", base.trim_end_matches('/'), segment(channel));
    let mut since = since;
    let mut backoff = TAIL_BACKOFF_MIN;
    loop {
        let url = match &since {
            Some(s) => format!("{base}?timeout=30&max=100&since={s}"),
            None => format!("{base}?timeout=30&max=100"),
        };
        let result = match Request::get(&url).body(Full::default()) {
            Ok(req) => send(&client, req).await,
            Err(_) => Err(CliError::Url(url.clone())),
        };
        let body = match result {
            Ok((StatusCode::OK, body)) => body,
            Ok((status, body)) => {
                eprintln!("tail: {status}: {}", String::from_utf8_lossy(&body));
                wait(&mut backoff).await;
                continue;
            }
            Err(e) => {
                eprintln!("tail: {e}");
                wait(&mut backoff).await;
                continue;
            }
        };
        backoff = TAIL_BACKOFF_MIN;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        if v["gap"] == true {
            eprintln!("tail: gap: some messages were trimmed before they could be read");
        }
        for m in v["messages"].as_array().into_iter().flatten() {
            if writeln!(out, "{m}").and_then(|_| out.flush()).is_err() {
                return;
            }
        }
        if let Some(ts) = v.get("timestamp") {
            since = Some(ts.to_string());
        }
    }
}

/// Exponential backoff with full jitter.
async fn wait(backoff: &mut Duration) {
    let spread = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 255.0;
    tokio::time::sleep(backoff.mul_f64(0.5 + spread / 2.0)).await;
    *backoff = (*backoff * 2).min(TAIL_BACKOFF_MAX);
}
