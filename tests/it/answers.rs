//! Poll answers of any allowed size reach the client on every path: the
//! lean HTTP/1.1 path, hyper's HTTP/1.1, HTTP/2 in clear text, and both
//! over TLS; batches stop at `poll.max_batch_bytes` without losing anything.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::support::certs::Ca;
use crate::support::raw;
use crate::support::*;

/// How a poll reaches pollgate.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// A fresh HTTP/1.1 connection: served by the lean path.
    Lean,
    /// HTTP/1.1 on a connection hyper already serves (its first request
    /// was not a poll).
    Hyper,
    /// HTTP/2 with prior knowledge.
    H2c,
}

/// Sends `GET target` the way `path` says; returns (status, body).
async fn get_via(path: Path, addr: SocketAddr, target: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    match path {
        Path::Lean => {
            let mut conn = tokio::io::BufReader::new(tcp);
            raw::get_on(&mut conn, target).await;
            let a = raw::answer(&mut conn, false).await;
            (a.status, a.body)
        }
        Path::Hyper => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            // Not a poll route: the lean path hands the connection to hyper.
            let (status, _) = h1_request(&mut send, "/not-a-route").await;
            assert_eq!(status, 404);
            h1_request(&mut send, target).await
        }
        Path::H2c => {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = Request::get(format!("http://localhost{target}"))
                .body(Full::<Bytes>::default())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            read(resp).await
        }
    }
}

async fn h1_request(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    target: &str,
) -> (u16, String) {
    let req = Request::get(target)
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    read(send.send_request(req).await.unwrap()).await
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A message of about `bytes` bytes, numbered.
fn blob(n: usize, bytes: usize) -> Value {
    json!({ "n": n, "blob": "x".repeat(bytes) })
}

const BIG: usize = 2_500_000;
const LARGE_BODIES: &str = "webhook: { listen: \"127.0.0.1:0\", max_body: 3MiB }\n";

/// The config of `yaml()`, with the webhook taking 3 MiB publishes.
fn large(extra: &str) -> String {
    yaml(None, extra).replace("webhook: { listen: \"127.0.0.1:0\" }\n", LARGE_BODIES)
}

#[tokio::test]
async fn a_message_near_max_body_and_a_batch_of_two_mib_reach_every_clear_text_path() {
    let pg = Pollgate::start(&large("")).await;
    pg.publish("big", blob(0, BIG)).await;
    for i in 1..=20 {
        pg.publish("batch", blob(i, 100_000)).await;
    }
    for path in [Path::Lean, Path::Hyper, Path::H2c] {
        let (status, body) = get_via(path, pg.public, "/api/poll/big?since=0").await;
        assert_eq!(status, 200, "{path:?}: {}", &body[..body.len().min(200)]);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["data"]["blob"].as_str().map(str::len),
            Some(BIG),
            "{path:?}"
        );

        let (status, body) = get_via(path, pg.public, "/api/poll/batch?since=0&max=20").await;
        assert_eq!(status, 200, "{path:?}");
        assert!(
            !body.contains("upstream"),
            "a poll answer never mentions an upstream"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["count"], 20, "{path:?}");
        let numbers: Vec<u64> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["n"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, (1..=20).collect::<Vec<_>>(), "{path:?}");
    }
}

#[tokio::test]
async fn large_answers_reach_https_clients_over_http1_and_http2() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let tls = ca.localhost_tls(dir.path());
    let pg = Pollgate::start(&large(&tls)).await;
    pg.publish("big", blob(0, BIG)).await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let stream = ca.connect(pg.public, "localhost", &[alpn]).await;
        let req = Request::get("https://localhost/api/poll/big?since=0")
            .header("host", "localhost")
            .body(Full::<Bytes>::default())
            .unwrap();
        let resp = if alpn == b"h2" {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        let (status, body) = read(resp).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["blob"].as_str().map(str::len), Some(BIG));
    }
}

#[tokio::test]
async fn a_batch_stops_at_max_batch_bytes_and_the_cursor_continues_from_it() {
    let pg = Pollgate::start(&large("poll: { max_batch_bytes: 250KB }\n")).await;
    for i in 1..=20 {
        pg.publish("paged", blob(i, 100_000)).await;
    }
    // One message larger than the bound still goes out, alone.
    pg.publish("paged", blob(21, 400_000)).await;
    let mut since = "0".to_owned();
    let mut got = Vec::new();
    while got.len() < 21 {
        let target = format!("/api/poll/paged?since={since}&max=1000&timeout=0");
        let (status, body) = get_via(Path::Lean, pg.public, &target).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "messages", "{}", &body[..200.min(body.len())]);
        assert!(v.get("gap").is_none(), "nothing is lost between pages");
        let messages = v["messages"].as_array().unwrap();
        assert!(
            (1..=2).contains(&messages.len()),
            "two 100 KB messages fit in 250 KB, a third does not: {}",
            messages.len()
        );
        let last = messages.last().unwrap();
        assert_eq!(
            v["timestamp"], last["timestamp"],
            "the cursor is the last message sent"
        );
        got.extend(messages.iter().map(|m| m["n"].as_u64().unwrap()));
        since = v["timestamp"].to_string();
    }
    assert_eq!(got, (1..=21).collect::<Vec<_>>());
}
