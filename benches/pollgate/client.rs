//! The load tool's two clients: a waiter (one keep-alive connection that
//! polls one channel again and again, following the server's cursor) and a
//! paced publisher.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;

use crate::target::{CursorKind, Target};
use crate::Result;

/// Microseconds since the epoch: the publisher stamps it into the message,
/// the waiter subtracts it on arrival (same host, same clock).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One message as a waiter received it.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    pub waiter: usize,
    pub seq: u64,
    pub latency_us: u64,
}

/// What every waiter of a scenario shares.
#[derive(Default)]
pub struct Shared {
    /// Polls sent and not yet answered.
    pub pending: AtomicUsize,
    pub receipts: Mutex<Vec<Receipt>>,
    pub errors: AtomicUsize,
    pub stop: AtomicBool,
}

impl Shared {
    /// Waits until `n` polls are outstanding (all waiters are held).
    pub async fn until_pending(&self, n: usize, within: Duration) -> bool {
        let end = tokio::time::Instant::now() + within;
        while self.pending.load(Ordering::Acquire) < n {
            if tokio::time::Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Waits until `n` receipts are in.
    pub async fn until_receipts(&self, n: usize, within: Duration) -> bool {
        let end = tokio::time::Instant::now() + within;
        while self.receipts.lock().len() < n {
            if tokio::time::Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// The cursor the next poll carries.
#[derive(Default)]
struct Cursor {
    since: Option<String>,
    /// GRIP: the last `seq` received, sent as `last=` (the backend names it as `prev-id`).
    last: Option<String>,
    last_modified: Option<HeaderValue>,
    etag: Option<HeaderValue>,
}

/// Polls `url` on one connection from source address `src` until
/// `shared.stop`, recording every message.
pub async fn waiter(
    id: usize,
    src: Ipv4Addr,
    url: String,
    cursor_kind: CursorKind,
    shared: Arc<Shared>,
) {
    let Ok(uri) = url.parse::<Uri>() else {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut cursor = Cursor::default();
    let mut backoff = Backoff::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut sender) = connected(id, src, &uri, &shared, &mut backoff).await else {
            break;
        };
        while !shared.stop.load(Ordering::Relaxed) {
            // A server may close a keep-alive connection between two polls:
            // that is a reconnect, not an error.
            if sender.ready().await.is_err() {
                break;
            }
            let req = poll_request(&uri, &cursor);
            shared.pending.fetch_add(1, Ordering::AcqRel);
            let answer = match sender.send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    body.collect().await.map(|b| (parts, b.to_bytes()))
                }
                Err(e) => Err(e),
            };
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            let Ok((parts, body)) = answer else {
                if !shared.stop.load(Ordering::Relaxed) {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
                break; // reconnect
            };
            let arrived = now_us();
            if !(parts.status.is_success() || parts.status == 304 || parts.status == 408) {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                backoff.wait(id).await;
                continue;
            }
            backoff = Backoff::default();
            match cursor_kind {
                CursorKind::Pollgate => {
                    cursor.since = token_after(&body, b"\"timestamp\":").map(str::to_owned)
                }
                CursorKind::Nchan => {
                    if let Some(v) = parts.headers.get(LAST_MODIFIED) {
                        cursor.last_modified = Some(v.clone());
                    }
                    if let Some(v) = parts.headers.get(ETAG) {
                        cursor.etag = Some(v.clone());
                    }
                }
                CursorKind::Grip => {
                    if let Some(seq) = token_after(&body, b"\"seq\":") {
                        cursor.last = Some(seq.to_owned());
                    }
                }
                CursorKind::None => {}
            }
            receipt(&shared, id, &body, arrived);
        }
    }
}

/// Follows `url` as an event stream (Server-Sent Events) from source
/// address `src` until `shared.stop`, recording every message; a stream
/// that ends or breaks is reopened with the last event id seen as
/// `Last-Event-ID`. `shared.pending` counts streams open (head received).
pub async fn streamer(id: usize, src: Ipv4Addr, url: String, shared: Arc<Shared>) {
    let Ok(uri) = url.parse::<Uri>() else {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut last_id: Option<HeaderValue> = None;
    let mut backoff = Backoff::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut sender) = connected(id, src, &uri, &shared, &mut backoff).await else {
            break;
        };
        let mut req = poll_request(&uri, &Cursor::default());
        req.headers_mut().insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Some(v) = &last_id {
            req.headers_mut().insert("last-event-id", v.clone());
        }
        let resp = match sender.send_request(req).await {
            Ok(resp) if resp.status().is_success() => resp,
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                backoff.wait(id).await;
                continue;
            }
        };
        backoff = Backoff::default();
        shared.pending.fetch_add(1, Ordering::AcqRel);
        let mut body = resp.into_body();
        let mut pending = Vec::new();
        while !shared.stop.load(Ordering::Relaxed) {
            let Some(Ok(frame)) = body.frame().await else {
                break;
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let arrived = now_us();
            pending.extend_from_slice(&data);
            // Whole events only: each ends on a blank line.
            let Some(end) = pending.windows(2).rposition(|w| w == b"\n\n") else {
                continue;
            };
            for event in pending[..end]
                .split(|b| *b == b'\n')
                .collect::<Vec<_>>()
                .split(|l| l.is_empty())
            {
                for line in event {
                    if let Some(v) = line.strip_prefix(b"id: ") {
                        last_id = HeaderValue::from_bytes(v).ok();
                    }
                }
                receipt(&shared, id, &event.concat(), arrived);
            }
            pending.drain(..end + 2);
        }
        shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Retry delays after an error: 0.2 s doubling to 5 s, spread by up to a
/// half so that thousands of refused waiters do not come back at once.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    async fn wait(&mut self, id: usize) {
        let base = (0.2 * 2f64.powi(self.failures.min(5) as i32)).min(5.0);
        self.failures += 1;
        // Jitter from the clock and the waiter's number: cheap, and different per waiter.
        let spread = ((now_us() as usize ^ id.wrapping_mul(2_654_435_761)) % 1000) as f64 / 2000.0;
        tokio::time::sleep(Duration::from_secs_f64(base * (1.0 + spread))).await;
    }
}

/// A connection to `uri`, retried with backoff (each failure counted as an
/// error) until one opens; `None` once the run stops.
async fn connected(
    id: usize,
    src: Ipv4Addr,
    uri: &Uri,
    shared: &Shared,
    backoff: &mut Backoff,
) -> Option<http1::SendRequest<Empty<Bytes>>> {
    while !shared.stop.load(Ordering::Relaxed) {
        match connect(src, uri).await {
            Ok(sender) => return Some(sender),
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                backoff.wait(id).await;
            }
        }
    }
    None
}

async fn connect(src: Ipv4Addr, uri: &Uri) -> Result<http1::SendRequest<Empty<Bytes>>> {
    let host = uri.host().ok_or("no host")?;
    let addr: SocketAddr = format!("{host}:{}", uri.port_u16().unwrap_or(80)).parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.into(), 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn poll_request(uri: &Uri, cursor: &Cursor) -> Request<Empty<Bytes>> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let param = match (&cursor.since, &cursor.last) {
        (Some(since), _) => Some(format!("since={since}")),
        (None, Some(last)) => Some(format!("last={last}")),
        (None, None) => None,
    };
    let target = match param {
        Some(p) if path.contains('?') => format!("{path}&{p}"),
        Some(p) => format!("{path}?{p}"),
        None => path.to_owned(),
    };
    let mut req = Request::new(Empty::new());
    if let Ok(t) = target.parse() {
        *req.uri_mut() = t;
    }
    let headers = req.headers_mut();
    if let Some(host) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(http::header::HOST, host);
    }
    if let Some(v) = &cursor.last_modified {
        headers.insert(IF_MODIFIED_SINCE, v.clone());
    }
    if let Some(v) = &cursor.etag {
        headers.insert(IF_NONE_MATCH, v.clone());
    }
    req
}

/// The number right after `key` in `body`, as written (all three servers
/// echo the published JSON, so `"seq":` and `"ts":` are found the same way;
/// pollgate's `"timestamp"` is fractional seconds, kept exact as text).
fn token_after<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let at = body.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &body[at..];
    let len = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .count();
    std::str::from_utf8(&rest[..len])
        .ok()
        .filter(|t| !t.is_empty())
}

fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    token_after(body, key)?.parse().ok()
}

/// Publishes over a small keep-alive pool.
pub struct Publisher {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: String,
    body: String,
}

impl Publisher {
    pub fn new(target: &Target) -> Publisher {
        Publisher {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url: target.pub_url.clone(),
            body: target.pub_body.clone(),
        }
    }

    /// Publishes message `seq` to `channel`, stamped with the time now.
    pub async fn publish(&self, channel: &str, seq: u64) -> Result<()> {
        let body = self
            .body
            .replace("{channel}", channel)
            .replace("{seq}", &seq.to_string())
            .replace("{ts}", &now_us().to_string());
        let req = Request::post(self.url.replace("{channel}", channel))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = self.client.request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        if !status.is_success() {
            return Err(format!("publish answered {status}").into());
        }
        Ok(())
    }
}

/// Records the message a load-tool answer or event carries (its `seq` and
/// publish time `ts`), if it carries one.
fn receipt(shared: &Shared, id: usize, text: &[u8], arrived: u64) {
    if let (Some(seq), Some(ts)) = (
        number_after(text, b"\"seq\":"),
        number_after(text, b"\"ts\":"),
    ) {
        shared.receipts.lock().push(Receipt {
            waiter: id,
            seq,
            latency_us: arrived.saturating_sub(ts),
        });
    }
}
