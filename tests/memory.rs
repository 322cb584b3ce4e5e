//! Memory, measured from the inside: these tests assert on the process's
//! resident memory, so they run in a binary of their own and one at a time
//! (`SERIAL`), where no other test's allocations move the figure. The
//! bounds are generous: they catch a leak or a buffered body, not noise.

#[path = "it/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::*;

/// One memory test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn connect_disconnect_cycles_leave_nothing_behind() {
    let _one = SERIAL.lock().await;
    let pg = Pollgate::start(&yaml(None, "")).await;
    let addr = pg.public;
    // Each cycle: the poll is really held, then the client vanishes.
    let cycle = |i: usize| {
        let pg = &pg;
        async move {
            let w = tokio::spawn(async move {
                raw_get(addr, &format!("/api/poll/c{}?timeout=60", i % 50)).await
            });
            pg.held(1).await;
            w.abort();
            pg.held(0).await;
        }
    };
    for i in 0..500 {
        cycle(i).await;
    }
    let before = rss_kib();
    for i in 0..5_000 {
        cycle(i).await;
    }
    let after = rss_kib();
    assert!(
        after < before + 8 * 1024,
        "RSS {before} KiB -> {after} KiB over 5,000 cycles"
    );
    for i in 0..50 {
        assert_eq!(
            get(&pg.hook(&format!("/channels/c{i}"))).await.status,
            404,
            "channel c{i} was freed"
        );
    }
}

#[tokio::test]
async fn ten_thousand_garbage_requests_leave_pollgate_working() {
    let _one = SERIAL.lock().await;
    let pg = Pollgate::start(&yaml(None, "")).await;
    let addr = pg.public;
    let garbage: [&[u8]; 6] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /api/poll/%ZZ%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/poll/x?timeout=1e309&since=abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /api/poll/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ];
    let warm = rss_kib();
    let mut statuses = std::collections::HashMap::<String, usize>::new();
    for round in 0..100 {
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let g = garbage[(round + i) % garbage.len()];
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let _ = s.write_all(g).await;
                    let mut out = Vec::new();
                    // Every one of them is answered and closed at once; one
                    // still open after the head timeout (10 s) has hung.
                    let read = s.read_to_end(&mut out);
                    if tokio::time::timeout(Duration::from_secs(10), read)
                        .await
                        .is_err()
                    {
                        return "hung".to_owned();
                    }
                    String::from_utf8_lossy(&out)
                        .split(' ')
                        .nth(1)
                        .unwrap_or("closed")
                        .to_owned()
                })
            })
            .collect();
        for t in tasks {
            *statuses.entry(t.await.unwrap()).or_default() += 1;
        }
    }
    assert!(
        statuses
            .keys()
            .all(|s| s == "400" || s == "closed" || s == "505"),
        "{statuses:?}"
    );
    let waiter = tokio::spawn({
        let url = pg.url("/api/poll/after?timeout=30");
        async move { get(&url).await }
    });
    pg.held(1).await;
    pg.publish("after", serde_json::json!({"still": "alive"}))
        .await;
    assert_eq!(waiter.await.unwrap().json()["data"]["still"], "alive");
    let after = rss_kib();
    assert!(after < warm + 16 * 1024, "RSS {warm} KiB -> {after} KiB");
}

#[tokio::test]
async fn a_gigabyte_streams_both_ways_with_flat_memory() {
    let _one = SERIAL.lock().await;
    const SIZE: u64 = 1 << 30;
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    let before = rss_kib();

    // Upload: the client generates chunks lazily; nothing holds the whole body.
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let n = SIZE / chunk.len() as u64;
    let stream = futures_util::stream::iter(
        (0..n).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let req = Request::post(pg.url("/upload"))
        .body(StreamBody::new(stream))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, format!("{{\"bytes\":{SIZE}}}").as_bytes());
    let after_upload = rss_kib();

    // Download: count bytes frame by frame.
    let resp = crate::support::client()
        .request(
            Request::get(pg.url(&format!("/download?bytes={SIZE}")))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, SIZE);
    let after = rss_kib();
    let grew = after
        .saturating_sub(before)
        .max(after_upload.saturating_sub(before));
    assert!(
        grew < 64 * 1024,
        "RSS grew by {grew} KiB moving 2 GiB (before {before}, after {after})"
    );
}
