//! A "legacy" web app that knows nothing about long polling, except that it
//! POSTs an event to pollgate's webhook when something changes.
//!
//! ```sh
//! cargo run --example legacy_app                 # the app on 127.0.0.1:3000
//! cargo run --release                            # pollgate in front, on :8080
//! open http://127.0.0.1:8080/                    # the chat page, through pollgate
//! ```
//!
//! - `GET /`: the chat page (examples/chat/index.html), `GET /pollgate-client.js`
//! - `GET /api/messages`: every message so far
//! - `POST /api/messages` `{"user": "...", "text": "..."}`: store it, then publish it
//!   to pollgate (`POST {webhook}/publish/chat`).
//!
//! Flags: `--listen ADDR` (127.0.0.1:3000), `--webhook URL` (http://127.0.0.1:8081,
//! or $POLLGATE_WEBHOOK), `--token T` (or $POLLGATE_TOKEN).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;

const PAGE: &str = include_str!("chat/index.html");
const CLIENT_JS: &str = include_str!("client/pollgate-client.js");

struct App {
    messages: Mutex<Vec<serde_json::Value>>,
    webhook: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A "legacy" app that publishes to pollgate when something changes.
#[derive(clap::Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LEGACY_APP_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// pollgate's webhook listener.
    #[arg(
        long,
        env = "POLLGATE_WEBHOOK",
        default_value = "http://127.0.0.1:8081"
    )]
    webhook: String,
    /// Bearer token for the webhook, if pollgate requires one.
    #[arg(long, env = "POLLGATE_TOKEN")]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let app = Arc::new(App {
        messages: Mutex::new(Vec::new()),
        webhook: args.webhook,
        token: args.token,
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
    });
    let listener = TcpListener::bind(args.listen).await?;
    println!("legacy app on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(app.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let json = "application/json";
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        (&Method::GET, "/pollgate-client.js") => {
            reply(StatusCode::OK, "text/javascript", CLIENT_JS)
        }
        (&Method::GET, "/api/messages") => {
            let list = serde_json::Value::Array(app.messages.lock().clone());
            reply(StatusCode::OK, json, list.to_string())
        }
        (&Method::POST, "/api/messages") => {
            let Ok(body) = Limited::new(req.into_body(), 16 * 1024).collect().await else {
                return Ok(reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json,
                    r#"{"error":"too large"}"#,
                ));
            };
            let Ok(serde_json::Value::Object(mut msg)) = serde_json::from_slice(&body.to_bytes())
            else {
                return Ok(reply(
                    StatusCode::BAD_REQUEST,
                    json,
                    r#"{"error":"send a JSON object"}"#,
                ));
            };
            msg.retain(|k, _| k == "user" || k == "text");
            // The only change a legacy app needs: tell pollgate.
            match publish(&app, &serde_json::Value::Object(msg.clone())).await {
                Ok(published) => {
                    msg.insert("id".into(), published["message_id"].clone());
                    msg.insert("timestamp".into(), published["timestamp"].clone());
                    app.messages
                        .lock()
                        .push(serde_json::Value::Object(msg.clone()));
                    reply(
                        StatusCode::CREATED,
                        json,
                        serde_json::Value::Object(msg).to_string(),
                    )
                }
                Err(e) => reply(
                    StatusCode::BAD_GATEWAY,
                    json,
                    serde_json::json!({ "error": e }).to_string(),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, json, r#"{"error":"not found"}"#),
    })
}

async fn publish(app: &App, msg: &serde_json::Value) -> Result<serde_json::Value, String> {
    let mut req = Request::post(format!("{}/publish/chat", app.webhook))
        .header("content-type", "application/json");
    if let Some(token) = &app.token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(msg.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = app
        .client
        .request(req)
        .await
        .map_err(|e| format!("pollgate unreachable: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "pollgate answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}
