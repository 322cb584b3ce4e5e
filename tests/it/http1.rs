//! Long polls over HTTP/1 on one raw connection: the lean path that serves
//! them, and its hand-over to the full server for everything else.

use crate::support::raw::{answer, closed, connect, get_on, send};
use crate::support::*;

#[tokio::test]
async fn a_poll_then_a_proxied_upload_share_one_keep_alive_connection() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    let mut conn = connect(pg.public).await;
    get_on(&mut conn, "/api/poll/k?timeout=0").await;
    let polled = answer(&mut conn, false).await;
    assert_eq!(polled.status, 200);
    assert!(
        polled.body.contains("\"status\":\"timeout\""),
        "{}",
        polled.body
    );
    assert!(polled.header("date").is_some());

    send(
        &mut conn,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    let proxied = answer(&mut conn, false).await;
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.body.trim(), r#"{"bytes":5}"#);

    // And a poll again, now served by the full server on this connection.
    get_on(&mut conn, "/api/poll/k?timeout=0").await;
    assert_eq!(answer(&mut conn, false).await.status, 200);
}

#[tokio::test]
async fn a_held_poll_gets_the_message_and_the_connection_polls_again() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let mut conn = connect(pg.public).await;
    get_on(&mut conn, "/api/poll/held?timeout=30").await;
    pg.held(1).await;
    pg.publish("held", serde_json::json!({"n": 1})).await;
    let got = answer(&mut conn, false).await;
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(v["status"], "message");
    assert_eq!(v["data"]["n"], 1);
    assert_eq!(
        got.header("content-type"),
        Some("application/json"),
        "{}",
        got.head
    );

    let next = format!(
        "GET /api/poll/held?timeout=30&since={} HTTP/1.1\r\nHost: x\r\n\r\n",
        v["timestamp"]
    );
    send(&mut conn, next.as_bytes()).await;
    pg.held(1).await;
    pg.publish("held", serde_json::json!({"n": 2})).await;
    let second: serde_json::Value =
        serde_json::from_str(&answer(&mut conn, false).await.body).unwrap();
    assert_eq!(second["data"]["n"], 2);
}

#[tokio::test]
async fn head_answers_carry_the_length_but_no_body() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let mut conn = connect(pg.public).await;
    send(
        &mut conn,
        b"HEAD /api/poll/h?timeout=0 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let head = answer(&mut conn, true).await;
    assert_eq!(head.status, 200);
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(len > 0);
    // The next answer starts right away: no stray body bytes in between.
    get_on(&mut conn, "/api/poll/h?timeout=0").await;
    let get = answer(&mut conn, false).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.body.len(), len);
}

#[tokio::test]
async fn http_1_0_and_connection_close_end_the_connection_after_the_answer() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    for request in [
        &b"GET /api/poll/c?timeout=0 HTTP/1.0\r\n\r\n"[..],
        b"GET /api/poll/c?timeout=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let mut conn = connect(pg.public).await;
        send(&mut conn, request).await;
        let a = answer(&mut conn, false).await;
        assert_eq!(a.status, 200);
        assert!(closed(&mut conn).await, "still open after {:?}", a.head);
    }
    // HTTP/1.0 asking for keep-alive keeps it.
    let mut conn = connect(pg.public).await;
    let ask = b"GET /api/poll/c?timeout=0 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    send(&mut conn, ask).await;
    let first = answer(&mut conn, false).await;
    assert!(first.head.starts_with("HTTP/1.0 200"), "{}", first.head);
    assert_eq!(first.header("connection"), Some("keep-alive"));
    send(&mut conn, ask).await;
    assert_eq!(answer(&mut conn, false).await.status, 200);
}

#[tokio::test]
async fn pipelined_polls_are_answered_in_order() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let mut conn = connect(pg.public).await;
    send(
        &mut conn,
        b"GET /api/poll/p1?timeout=0 HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /api/poll/p2?timeout=0&max=5 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let first = answer(&mut conn, false).await;
    let second = answer(&mut conn, false).await;
    assert!(first.body.contains("\"status\":\"timeout\""));
    assert!(second.body.contains("\"status\":\"timeout\""));
    assert_eq!((first.status, second.status), (200, 200));
}

#[tokio::test]
async fn malformed_heads_on_a_poll_route_get_the_full_servers_400() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let mut conn = connect(pg.public).await;
    send(
        &mut conn,
        b"GET /api/poll/x HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    )
    .await;
    assert_eq!(answer(&mut conn, false).await.status, 400);
}

#[tokio::test]
async fn a_client_that_leaves_mid_hold_frees_its_poll() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let mut conn = connect(pg.public).await;
    get_on(&mut conn, "/api/poll/gone?timeout=30").await;
    pg.held(1).await;
    drop(conn);
    pg.held(0).await;
    let body = pg.metrics_text().await;
    assert!(
        body.contains("pollgate_polls_total{outcome=\"client_gone\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let pg = Pollgate::start(&yaml(None, "server: { header_timeout: 300ms }\n")).await;
    let mut conn = connect(pg.public).await;
    get_on(&mut conn, "/api/poll/i?timeout=0").await;
    assert_eq!(answer(&mut conn, false).await.status, 200);
    assert!(closed(&mut conn).await);
}

/// Reads what the server sends until it closes (at most 5 s).
async fn rest(conn: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.read_to_end(&mut out),
    );
    let _ = read.await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused_and_the_bytes_never_read_as_a_request() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    let mut conn = connect(pg.public).await;
    // The 40 bytes are a whole request to /smuggled: a desync would serve it.
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: xy\r\n\r\n\r\n\r\n";
    assert_eq!(smuggled.len(), 40);
    let mut request =
        b"GET /api/poll/x?timeout=0 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n"
            .to_vec();
    request.extend_from_slice(smuggled);
    send(&mut conn, &request).await;
    let refused = answer(&mut conn, false).await;
    assert_eq!(refused.status, 400, "{}", refused.head);
    let after = rest(&mut conn).await;
    assert!(
        after.is_empty(),
        "nothing follows the 400, and it closes: {after:?}"
    );
    assert_eq!(up.hits("/smuggled"), 0);
}

/// What comes back for `request` followed by a pipelined GET of
/// `/smuggled`, on a connection of `open`: the whole stream, until closed.
async fn after_te_and_cl<S>(mut conn: S, request: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = format!("{request}0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.write_all(bytes.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut out),
    );
    // A reset after the answer is a close too.
    let _ = read.await.expect("the connection closes");
    String::from_utf8_lossy(&out).into_owned()
}

/// `Transfer-Encoding` with `Content-Length` (RFC 9112 allows it; nginx
/// and Envoy refuse it): 400, the connection closed, nothing after it
/// served, on the lean path's routes, hyper's, the webhook's and over TLS.
#[tokio::test]
async fn transfer_encoding_with_content_length_is_refused_and_closes_on_every_path() {
    let up = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::Ca::new();
    let plain = Pollgate::start(&yaml(Some(up.addr), "")).await;
    let tls = ca.localhost_tls(dir.path());
    let secure = Pollgate::start(&format!("{}{tls}", yaml(Some(up.addr), ""))).await;
    let heads = [
        "Transfer-Encoding: chunked\r\nContent-Length: 40",
        "Content-Length: 40\r\nTransfer-Encoding: chunked",
        "Content-Length: 0\r\nTransfer-Encoding: gzip, chunked",
    ];
    for target in ["GET /api/poll/x?timeout=0", "GET /items", "POST /items"] {
        for framing in heads {
            let request = format!("{target} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n");
            let seen = after_te_and_cl(connect(plain.public).await.into_inner(), &request).await;
            assert!(seen.starts_with("HTTP/1.1 400 "), "{request:?}: {seen}");
            assert!(
                seen.contains("Transfer-Encoding and Content-Length"),
                "{seen}"
            );
            assert_eq!(seen.matches("HTTP/1.1").count(), 1, "{request:?}: {seen}");
            let hook = format!("POST /publish/c HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n");
            let tcp = tokio::net::TcpStream::connect(plain.webhook).await.unwrap();
            let seen = after_te_and_cl(tcp, &hook).await;
            assert!(seen.starts_with("HTTP/1.1 400 "), "webhook: {seen}");
            let tls = ca.connect(secure.public, "localhost", &[b"http/1.1"]).await;
            let seen = after_te_and_cl(tls, &request).await;
            assert!(
                seen.starts_with("HTTP/1.1 400 "),
                "TLS: {request:?}: {seen}"
            );
            assert_eq!(seen.matches("HTTP/1.1").count(), 1, "TLS: {seen}");
        }
    }
    assert_eq!(up.hits("/smuggled") + up.hits("/items"), 0);
    let refused = "pollgate_client_errors_total{kind=\"bad_framing\"}";
    assert_eq!(plain.metric(refused).await, 18.0);
    assert_eq!(secure.metric(refused).await, 9.0);
}

#[tokio::test]
async fn framing_hyper_refuses_is_refused_on_a_poll_route_too() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    for request in [
        &b"GET /api/poll/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"GET /api/poll/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /api/poll/x HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /api/poll/x HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n",
        b"GET /api/poll/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ] {
        let mut conn = connect(pg.public).await;
        send(&mut conn, request).await;
        let a = answer(&mut conn, false).await;
        assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(request));
        assert!(closed(&mut conn).await);
    }
}
