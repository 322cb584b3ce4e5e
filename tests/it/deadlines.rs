//! Every connection state has a deadline: a peer that stalls anywhere is
//! cut off, its memory freed, and the fault counted against it.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::certs::Ca;
use crate::support::raw::{self, connect, send};
use crate::support::*;

/// Short deadlines, so the tests wait a second, not thirty.
const QUICK: &str = "server: { header_timeout: 1s, write_timeout: 1s, body_timeout: 1s }\n";

/// The deadline `QUICK` sets.
const DEADLINE: Duration = Duration::from_secs(1);

/// Reads until the server closes the connection (EOF or reset); returns the
/// bytes read. A connection still open ten deadlines after the call fails
/// the test: a loaded machine is late, never that late.
async fn until_closed(stream: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = vec![0; 64 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    };
    tokio::time::timeout(DEADLINE * 10, read_all)
        .await
        .expect("the server closed the connection")
}

#[tokio::test]
async fn an_http2_preface_then_half_a_frame_is_closed_within_the_head_timeout() {
    let pg = Pollgate::start(&yaml(None, QUICK)).await;
    let mut stream = TcpStream::connect(pg.public).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04")
        .await
        .unwrap();
    until_closed(&mut stream).await;
}

/// The GOAWAY frame in what an HTTP/2 server sent, as (last stream, code).
fn goaway(out: &[u8]) -> Option<(u32, u32)> {
    let mut at = 0;
    while out.len() >= at + 9 {
        let len = (usize::from(out[at]) << 16)
            | (usize::from(out[at + 1]) << 8)
            | usize::from(out[at + 2]);
        let payload = out.get(at + 9..at + 9 + len)?;
        if out[at + 3] == 0x7 {
            let word = |i: usize| {
                u32::from_be_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
            };
            return Some((word(0) & 0x7fff_ffff, word(4)));
        }
        at += 9 + len;
    }
    None
}

/// A frame that is an error by its header alone (a first frame that is not
/// SETTINGS; a RST_STREAM whose length is not 4) is answered with
/// GOAWAY(PROTOCOL_ERROR) at once, its payload never sent: the head
/// timeout (30 s here) is not what ends it.
#[tokio::test]
async fn an_http2_frame_wrong_by_its_header_gets_goaway_at_once() {
    let pg = Pollgate::start(&yaml(None, "server: { header_timeout: 30s }\n")).await;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: &[u8] = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    for frames in [
        // A PING first, 8 bytes announced, none sent.
        [PREFACE, b"\x00\x00\x08\x06\x00\x00\x00\x00\x00"].concat(),
        // After SETTINGS, a RST_STREAM of 5 bytes, none sent.
        [PREFACE, SETTINGS, b"\x00\x00\x05\x03\x00\x00\x00\x00\x01"].concat(),
    ] {
        let mut stream = TcpStream::connect(pg.public).await.unwrap();
        stream.write_all(&frames).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0; 1024];
        let read = async {
            while goaway(&out).is_none() {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        };
        // Well before the head timeout.
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("answered before the head timeout");
        assert_eq!(
            goaway(&out),
            Some((0, 0x1)),
            "GOAWAY(PROTOCOL_ERROR): {out:?}"
        );
        assert_eq!(until_closed(&mut stream).await, 0, "then closed");
    }
    pg.metric_reaches("pollgate_client_errors_total{kind=\"bad_frame\"}", 2.0)
        .await;
}

#[tokio::test]
async fn a_tls_client_that_sends_nothing_after_its_handshake_is_closed() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let tls = ca.localhost_tls(dir.path());
    let pg = Pollgate::start(&yaml(None, &format!("{QUICK}{tls}"))).await;
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let mut stream = ca.connect(pg.public, "localhost", &[alpn]).await;
        // Half of the HTTP/2 preface, or nothing at all for HTTP/1.1.
        if alpn == b"h2" {
            stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        }
        let mut buf = [0; 256];
        let closed = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), closed)
            .await
            .expect("closed");
    }
}

/// A connection to `addr` whose receive buffer is as small as the kernel
/// allows, so the server's writes back up almost at once.
async fn tiny_reader(addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

const HUGE: usize = 16 * 1024 * 1024;

async fn with_a_huge_message(extra: &str) -> Pollgate {
    let config = yaml(None, &format!("{QUICK}{extra}")).replace(
        "webhook: { listen: \"127.0.0.1:0\" }\n",
        "webhook: { listen: \"127.0.0.1:0\", max_body: 20MiB }\n",
    );
    let pg = Pollgate::start(&config).await;
    pg.publish("huge", json!({ "blob": "x".repeat(HUGE) }))
        .await;
    pg
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_cut_off_on_the_lean_path() {
    let pg = with_a_huge_message("").await;
    let mut stream = tiny_reader(pg.public).await;
    stream
        .write_all(b"GET /api/poll/huge?since=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    pg.metric_reaches("pollgate_client_errors_total{kind=\"write_timeout\"}", 1.0)
        .await;
    let read = until_closed(&mut stream).await;
    assert!(
        read < HUGE,
        "the rest of the answer was dropped, not kept: {read}"
    );
    pg.metric_reaches("pollgate_connections{listener=\"public\"}", 0.0)
        .await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_cut_off_by_hyper_too() {
    let pg = with_a_huge_message("").await;
    let mut stream = tiny_reader(pg.public).await;
    // The first request is not a poll: hyper serves the connection.
    stream
        .write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /api/poll/huge?since=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    pg.metric_reaches("pollgate_client_errors_total{kind=\"write_timeout\"}", 1.0)
        .await;
    let read = until_closed(&mut stream).await;
    assert!(read < HUGE, "{read}");
}

#[tokio::test]
async fn a_proxied_body_that_stalls_is_cut_after_the_route_timeout() {
    let up = Upstream::start("app").await;
    let config = yaml(Some(up.addr), QUICK).replace("timeout: 5s", "timeout: 1s");
    let pg = Pollgate::start(&config).await;
    let resp = client()
        .request(
            Request::get(pg.url("/stall"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the head arrived in time");
    let body = resp.into_body().collect().await;
    assert!(body.is_err(), "the client sees a cut body, not a hang");
    pg.metric_reaches(
        "pollgate_upstream_errors_total{upstream=\"app\",kind=\"body_timeout\"}",
        1.0,
    )
    .await;
}

/// Sends `POST /upload` declaring 50 bytes and sending 5; then `then`.
async fn short_upload(pg: &Pollgate, close_after: bool) -> (Option<raw::Answer>, TcpStream) {
    let mut conn = connect(pg.public).await;
    send(
        &mut conn,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nhello",
    )
    .await;
    if close_after {
        conn.get_mut().shutdown().await.unwrap();
    }
    let answer = tokio::time::timeout(Duration::from_secs(30), raw::answer(&mut conn, false))
        .await
        .ok();
    (answer, conn.into_inner())
}

#[tokio::test]
async fn a_client_that_stops_mid_body_gets_400_and_is_never_counted_as_the_app() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), QUICK)).await;
    let (answer, _conn) = short_upload(&pg, false).await;
    let answer = answer.expect("an answer");
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("stopped sending"), "{}", answer.body);
    assert_eq!(
        pg.metric("pollgate_client_errors_total{kind=\"body_timeout\"}")
            .await,
        1.0
    );
    let text = pg.metrics_text().await;
    assert!(!text.contains("pollgate_upstream_errors_total{"), "{text}");
    assert!(!text.contains("class=\"5xx\""), "{text}");
}

#[tokio::test]
async fn a_client_that_closes_mid_body_is_its_own_fault() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), QUICK)).await;
    let (answer, _conn) = short_upload(&pg, true).await;
    if let Some(answer) = answer {
        assert_eq!(answer.status, 400, "{}", answer.body);
    }
    pg.metric_reaches("pollgate_client_errors_total{kind=\"body_aborted\"}", 1.0)
        .await;
    let text = pg.metrics_text().await;
    assert!(!text.contains("pollgate_upstream_errors_total{"), "{text}");
}

#[tokio::test]
async fn an_idle_webhook_connection_is_closed_after_the_head_timeout() {
    let pg = Pollgate::start(&yaml(None, QUICK)).await;
    let mut stream = TcpStream::connect(pg.webhook).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let read = until_closed(&mut stream).await;
    assert!(read > 0, "it answered first");
}

#[tokio::test]
async fn an_http2_connection_is_closed_when_idle_never_while_a_request_is_in_flight() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), QUICK)).await;
    let tcp = TcpStream::connect(pg.public).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    // Longer than the idle limit, but in flight all along.
    let req = Request::get("http://localhost/slow?ms=2500")
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    // Then nothing: the connection ends.
    tokio::time::timeout(Duration::from_secs(30), conn)
        .await
        .expect("closed once idle")
        .unwrap()
        .ok();
}

#[tokio::test]
async fn an_upload_that_pauses_within_the_body_timeout_is_not_cut_by_the_route_timeout() {
    let up = Upstream::start("app").await;
    let config = yaml(Some(up.addr), "server: { body_timeout: 10s }\n")
        .replace("timeout: 5s", "timeout: 1s");
    let pg = Pollgate::start(&config).await;
    let mut conn = connect(pg.public).await;
    send(
        &mut conn,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
    )
    .await;
    // The pause is the scenario: longer than the route's timeout, shorter
    // than the body's.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send(&mut conn, b"world").await;
    let a = raw::answer(&mut conn, false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body.trim(), r#"{"bytes":10}"#);
}
