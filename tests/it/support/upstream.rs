//! A real upstream app for tests: a hyper server on 127.0.0.1:0.
//!
//! - any path: echoes the request as JSON (upstream name, method, path,
//!   query, headers, body length);
//! - `/slow?ms=N`: answers after N ms;
//! - `/upload`: streams the body in, answers `{"bytes": n}`;
//! - `/download?bytes=N`: streams N bytes out;
//! - `/stall`: sends its head and 100 bytes of body, then nothing, ever;
//! - `/ws` with `Upgrade`: switches protocols and echoes bytes;
//! - `/instruct?h=Name:Value&body=...`: answers with those headers and body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type Body = UnsyncBoxBody<Bytes, Infallible>;

pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests seen, by path.
    pub hits: Hits,
    stop: CancellationToken,
}

/// Requests seen per path, with a wakeup for tests that wait for one.
#[derive(Default)]
pub struct HitCounts {
    map: parking_lot::Mutex<std::collections::HashMap<String, u64>>,
    seen: tokio::sync::Notify,
}

pub type Hits = std::sync::Arc<HitCounts>;

impl HitCounts {
    fn count(&self, path: &str) {
        *self.map.lock().entry(path.to_owned()).or_default() += 1;
        self.seen.notify_waiters();
    }
}

impl Upstream {
    pub fn hits(&self, path: &str) -> u64 {
        self.hits.map.lock().get(path).copied().unwrap_or(0)
    }

    /// Waits until the app has received a request for `path`.
    pub async fn received(&self, path: &str) {
        loop {
            let seen = self.hits.seen.notified();
            tokio::pin!(seen);
            seen.as_mut().enable();
            if self.hits(path) > 0 {
                return;
            }
            seen.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let hits = Hits::default();
        let counted = hits.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => match r { Ok(p) => p, Err(_) => continue },
                };
                let hits = counted.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        hits.count(req.uri().path());
                        handle(name, req)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, hits, stop }
    }
}

impl Upstream {
    /// The same app behind TLS, serving `leaf`.
    pub async fn start_tls(name: &'static str, leaf: &super::certs::Leaf) -> Upstream {
        use rustls_pki_types::pem::PemObject;
        let chain = vec![leaf.der.clone()];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let hits = Hits::default();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => match r { Ok(p) => p, Err(_) => continue },
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |req| handle(name, req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Upstream { addr, hits, stop }
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

fn query_num(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/ws" && req.headers().contains_key("upgrade") {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(""))
            .unwrap();
        return Ok(resp);
    }
    if path == "/instruct" {
        // Answers with the headers (`h=Name:Value`, repeatable) and body
        // (`body=`) the query names: GRIP instructions written by hand, for
        // the mistakes no GRIP library makes.
        let mut resp = Response::builder();
        let mut body = String::new();
        for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            match (k.as_ref(), v.split_once(':')) {
                ("h", Some((name, value))) => resp = resp.header(name, value.trim()),
                ("body", _) => body = v.into_owned(),
                _ => {}
            }
        }
        return Ok(resp.body(full(body)).unwrap());
    }
    if let Some(kind) = path.strip_prefix("/auth/") {
        // Authorization checks: the session cookie decides.
        let cookie = req
            .headers()
            .get("cookie")
            .and_then(|c| c.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if kind == "slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let status = match kind {
            "teapot" => StatusCode::IM_A_TEAPOT,
            _ if cookie.contains("session=good") => StatusCode::NO_CONTENT,
            _ if cookie.contains("session=") => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        let resp = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-auth-channel", req.uri().query().unwrap_or(""))
            .body(full(format!("{{\"app_says\":{}}}", status.as_u16())))
            .unwrap();
        return Ok(resp);
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(query_num(&req, "ms"))).await;
    }
    if path == "/stall" {
        let first =
            stream::once(async { Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b's'; 100]))) });
        let body = first.chain(stream::pending());
        return Ok(Response::new(StreamBody::new(body).boxed_unsync()));
    }
    if path == "/download" {
        let total = query_num(&req, "bytes");
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = total.div_ceil(chunk.len() as u64);
        let body = stream::iter((0..chunks).map(move |i| {
            let left = total - i * chunk.len() as u64;
            Ok::<_, Infallible>(Frame::data(
                chunk.slice(..left.min(chunk.len() as u64) as usize),
            ))
        }));
        return Ok(Response::new(StreamBody::new(body).boxed_unsync()));
    }
    let (parts, mut body) = req.into_parts();
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    if path == "/upload" {
        return Ok(Response::new(full(format!("{{\"bytes\":{len}}}"))));
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").into()))
        .collect();
    let echo = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": len,
        "version": format!("{:?}", parts.version),
    });
    let status = if path == "/teapot" {
        StatusCode::IM_A_TEAPOT
    } else {
        StatusCode::OK
    };
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream-conn", "keep")
        .header("connection", "x-upstream-conn")
        .body(full(echo.to_string()))
        .unwrap();
    Ok(resp)
}
