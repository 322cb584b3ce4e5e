//! Every resource has a cap: refusals are fast, counted, and never take the
//! webhook (the app's publishes, the orchestrator's probes) down with them.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::raw::{answer, connect, get_on};
use crate::support::*;

#[tokio::test]
async fn at_max_connections_the_public_port_waits_and_the_webhook_still_answers() {
    let pg = Pollgate::start(&yaml(
        None,
        "server: { max_connections: 2, header_timeout: 60s }\n",
    ))
    .await;
    let first = connect(pg.public).await;
    let second = connect(pg.public).await;
    // A third client connects (the kernel completes the handshake) but is
    // not served: the accept loop holds it until a slot frees, and accepts
    // nothing else meanwhile.
    let mut third = connect(pg.public).await;
    pg.metric_reaches(
        "pollgate_connection_cap_reached_total{listener=\"public\"}",
        1.0,
    )
    .await;
    get_on(&mut third, "/api/poll/capped?timeout=0").await;
    // Meanwhile the app can publish and the probes answer.
    assert_eq!(get(&pg.hook("/healthz")).await.status, 200);
    assert_eq!(get(&pg.hook("/readyz")).await.status, 200);
    pg.publish("capped", json!({"still": "publishing"})).await;
    assert_eq!(
        pg.metric("pollgate_connections{listener=\"public\"}").await,
        2.0
    );
    // One connection ends: the third is accepted and answered.
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(30), answer(&mut third, false))
        .await
        .expect("served once a slot is free");
    assert_eq!(served.status, 200);
    drop(second);
}

fn poll_from(pg: &Pollgate, client: &str, channel: &str) -> tokio::task::JoinHandle<Reply> {
    let req = http::Request::get(pg.url(&format!("/api/poll/{channel}?timeout=30")))
        .header("x-client-id", client)
        .body(http_body_util::Full::<Bytes>::default())
        .unwrap();
    tokio::spawn(send(req))
}

#[tokio::test]
async fn one_address_is_capped_whatever_client_ids_it_sends() {
    let pg = Pollgate::start(&yaml(None, "limits: { max_per_address: 2 }\n")).await;
    let held = [poll_from(&pg, "tab-1", "a"), poll_from(&pg, "tab-2", "b")];
    pg.held(2).await;
    let refused = poll_from(&pg, "tab-3", "c").await.unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"], "too many polls from this address");
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(
        pg.metric("pollgate_poll_limit_refusals_total{limit=\"address\"}")
            .await,
        1.0
    );
    pg.publish("a", json!({})).await;
    pg.publish("b", json!({})).await;
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn requests_past_an_upstreams_max_in_flight_are_shed_at_once() {
    let up = Upstream::start("app").await;
    let config = yaml(Some(up.addr), "").replace(
        "connect_timeout: 1s }",
        "connect_timeout: 1s, max_in_flight: 1 }",
    );
    let pg = Pollgate::start(&config).await;
    let slow = tokio::spawn({
        let url = pg.url("/slow?ms=3000");
        async move { get(&url).await }
    });
    up.received("/slow").await;
    let shed = get(&pg.url("/fast")).await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.headers["retry-after"], "1");
    assert!(shed.json()["error"].as_str().unwrap().contains("busy"));
    assert_eq!(up.hits("/fast"), 0, "shed before the app saw it");
    assert_eq!(
        pg.metric("pollgate_upstream_shed_total{upstream=\"app\"}")
            .await,
        1.0
    );
    assert!(!pg
        .metrics_text()
        .await
        .contains("pollgate_upstream_errors_total{"));
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(
        get(&pg.url("/fast")).await.status,
        200,
        "the slot is free again"
    );
}

/// An HTTP/2 client (prior knowledge) that grants `window` bytes per stream
/// and never more.
async fn h2_client(pg: &Pollgate, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(pg.public).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn get_request(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://localhost{path}"))
        .body(())
        .unwrap()
}

/// 150 streams of a client that grants no window, each asking for 2.5 MB:
/// each stream's answer is its own (made of the buffered messages' shared
/// bytes, no copy per stream). Once nothing at all is taken for the write
/// deadline, each stream with bytes waiting is given up on; the connection
/// stays open (a client may still read it) and serves a new stream.
#[tokio::test]
async fn an_http2_client_that_grants_no_window_has_its_streams_given_up_on() {
    let pg = Pollgate::start(&yaml(
        None,
        "server: { write_timeout: 1s }\nlimits: { max_per_client: 1000, max_per_address: 1000 }\n",
    ))
    .await;
    for i in 0..50 {
        pg.publish("wide", json!({ "i": i, "blob": "x".repeat(50_000) }))
            .await;
    }
    let mut client = h2_client(&pg, 0).await;
    let mut answers = Vec::new();
    for _ in 0..150 {
        client = client.ready().await.unwrap();
        let (resp, _) = client
            .send_request(get_request("/api/poll/wide?since=0&max=1000"), true)
            .unwrap();
        answers.push(resp);
    }
    pg.metric_reaches(
        "pollgate_client_errors_total{kind=\"stream_write_timeout\"}",
        150.0,
    )
    .await;
    pg.held(0).await;
    assert_eq!(
        pg.metric("pollgate_client_errors_total{kind=\"write_timeout\"}")
            .await,
        0.0,
        "the connection was not closed"
    );
    // A new stream is still served (its head needs no window).
    let answered = async {
        let mut client = client.ready().await.unwrap();
        let (resp, _) = client
            .send_request(get_request("/api/poll/other?timeout=0"), true)
            .unwrap();
        resp.await.unwrap().status()
    };
    let status = tokio::time::timeout(Duration::from_secs(30), answered).await;
    assert_eq!(status.expect("answered"), 200);
}

/// Waits until `n` polls are held (false) or the connection has been cut
/// off for rapid reset (true).
async fn held_or_cut(pg: &Pollgate, n: usize) -> bool {
    let cut = "pollgate_client_errors_total{kind=\"rapid_reset\"}";
    let wait = async {
        loop {
            if pg.metric(cut).await >= 1.0 {
                return true;
            }
            if pg.metrics.held() == n {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("held, or cut off")
}

#[tokio::test]
async fn a_client_that_cancels_streams_as_fast_as_it_opens_them_is_cut_off() {
    let pg = Pollgate::start(&yaml(
        None,
        "limits: { max_per_client: 1000, max_per_address: 1000 }\n",
    ))
    .await;
    let mut client = h2_client(&pg, 65_535).await;
    let mut batches = 0;
    let cut = loop {
        batches += 1;
        assert!(batches <= 10, "never cut off");
        let mut streams = Vec::new();
        let mut refused = false;
        for _ in 0..150 {
            match client.clone().ready().await {
                Ok(ready) => client = ready,
                Err(_) => {
                    refused = true;
                    break;
                }
            }
            match client.send_request(get_request("/api/poll/reset?timeout=30"), true) {
                Ok((_, stream)) => streams.push(stream),
                Err(_) => {
                    refused = true;
                    break;
                }
            }
        }
        if refused {
            break true;
        }
        // Held (unless the connection was cut meanwhile), then every one
        // cancelled at once.
        if held_or_cut(&pg, streams.len()).await {
            break true;
        }
        for mut s in streams {
            s.send_reset(h2::Reason::CANCEL);
        }
        if held_or_cut(&pg, 0).await {
            break true;
        }
    };
    assert!(cut);
    pg.metric_reaches("pollgate_client_errors_total{kind=\"rapid_reset\"}", 1.0)
        .await;
    pg.metric_reaches("pollgate_connections{listener=\"public\"}", 0.0)
        .await;
    let _ = TcpStream::connect(pg.public)
        .await
        .unwrap()
        .shutdown()
        .await;
}

/// Answers an HTTP/2 client never takes (no window) do not hold up a
/// shutdown.
#[tokio::test]
async fn shutdown_is_not_held_up_by_answers_an_http2_client_never_takes() {
    let pg = Pollgate::start(&yaml(
        None,
        "limits: { max_per_client: 1000, max_per_address: 1000 }\n",
    ))
    .await;
    for i in 0..30 {
        pg.publish("wide", json!({ "i": i, "blob": "x".repeat(50_000) }))
            .await;
    }
    let mut client = h2_client(&pg, 0).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        client = client.ready().await.unwrap();
        let (resp, _) = client
            .send_request(get_request("/api/poll/wide?since=0&max=1000"), true)
            .unwrap();
        answers.push(resp);
    }
    // Both answered (1.5 MB each), neither taken.
    pg.metric_reaches("pollgate_messages_delivered_total", 60.0)
        .await;
    pg.held(0).await;
    tokio::time::timeout(Duration::from_secs(30), pg.stop())
        .await
        .expect("shutdown is not held up by answers waiting for a window");
}
