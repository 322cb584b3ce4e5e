//! Long polling, end to end: the wire contract on the public listener.

use std::time::Duration;

use crate::support::*;
use serde_json::{json, Value};

fn spawn_get(url: String) -> tokio::task::JoinHandle<Reply> {
    tokio::spawn(async move { get(&url).await })
}

#[tokio::test]
async fn held_poll_released_by_publish() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let waiter = spawn_get(pg.url("/api/poll/news?timeout=30"));
    pg.held(1).await;
    let published = pg.publish("news", json!({"text": "hello", "n": 1})).await;
    let reply = waiter.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.headers["content-type"], "application/json");
    let body = reply.json();
    assert_eq!(body["status"], "message");
    assert_eq!(body["data"]["text"], "hello");
    assert_eq!(body["data"]["n"], 1);
    assert_eq!(body["data"]["id"], published["message_id"]);
    assert_eq!(body["data"]["timestamp"], published["timestamp"]);
    assert_eq!(body["timestamp"], published["timestamp"]);
    assert_eq!(published["status"], "published");
    uuid::Uuid::parse_str(published["message_id"].as_str().unwrap()).unwrap();
}

#[tokio::test]
async fn polls_on_other_channels_stay_held() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let a = spawn_get(pg.url("/api/poll/a?timeout=30"));
    let b = spawn_get(pg.url("/api/poll/b?timeout=30"));
    pg.held(2).await;
    pg.publish("a", json!({"to": "a"})).await;
    assert_eq!(a.await.unwrap().json()["data"]["to"], "a");
    pg.held(1).await;
    assert!(!b.is_finished());
    pg.publish("b", json!({"to": "b"})).await;
    assert_eq!(b.await.unwrap().json()["data"]["to"], "b");
}

#[tokio::test]
async fn nothing_in_time_is_a_timeout_with_a_timestamp() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = tokio::time::Instant::now();
    let body = get(&pg.url("/api/poll/quiet?timeout=0.3")).await.json();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(body["status"], "timeout");
    let ts = body["timestamp"].as_f64().unwrap();
    assert!((ts - now).abs() < 5.0, "timestamp {ts} is about now {now}");
    let body = get(&pg.url("/api/poll/quiet?timeout=0")).await.json();
    assert_eq!(body["status"], "timeout", "timeout=0 answers at once");
}

#[tokio::test]
async fn the_timeout_is_capped_by_max_timeout() {
    let pg = Pollgate::start(&yaml(
        None,
        "poll: { default_timeout: 100ms, max_timeout: 200ms }\n",
    ))
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        get(&pg.url("/api/poll/c?timeout=3600")).await.json()["status"],
        "timeout"
    );
    assert_eq!(
        get(&pg.url("/api/poll/c")).await.json()["status"],
        "timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn without_since_only_later_messages_count() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    pg.publish("c", json!({"old": true})).await;
    let body = get(&pg.url("/api/poll/c?timeout=0.2")).await.json();
    assert_eq!(body["status"], "timeout");
}

#[tokio::test]
async fn since_is_a_lossless_cursor() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let mut stamps = Vec::new();
    for n in 0..5 {
        stamps.push(
            pg.publish("c", json!({"n": n})).await["timestamp"]
                .as_f64()
                .unwrap(),
        );
    }
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {stamps:?}"
    );
    let mut since = "0".to_owned();
    for n in 0..5 {
        let body = get(&pg.url(&format!("/api/poll/c?since={since}&timeout=0")))
            .await
            .json();
        assert_eq!(body["status"], "message");
        assert_eq!(body["data"]["n"], n, "one message per answer, oldest first");
        since = body["timestamp"].to_string();
    }
    let body = get(&pg.url(&format!("/api/poll/c?since={since}&timeout=0")))
        .await
        .json();
    assert_eq!(body["status"], "timeout");
    // The timeout's timestamp is itself a cursor that misses nothing later.
    let next = body["timestamp"].to_string();
    pg.publish("c", json!({"n": 5})).await;
    let body = get(&pg.url(&format!("/api/poll/c?since={next}&timeout=5")))
        .await
        .json();
    assert_eq!(body["data"]["n"], 5);
}

#[tokio::test]
async fn last_id_is_a_cursor_too() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let first = pg.publish("c", json!({"n": 0})).await;
    pg.publish("c", json!({"n": 1})).await;
    let id = first["message_id"].as_str().unwrap();
    let body = get(&pg.url(&format!("/api/poll/c?last_id={id}&timeout=0")))
        .await
        .json();
    assert_eq!(body["data"]["n"], 1);
    assert!(body.get("gap").is_none());
}

#[tokio::test]
async fn max_returns_a_batch() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let mut last = Value::Null;
    for n in 0..5 {
        last = pg.publish("c", json!({"n": n})).await;
    }
    let body = get(&pg.url("/api/poll/c?since=0&max=3&timeout=0"))
        .await
        .json();
    assert_eq!(body["status"], "messages");
    assert_eq!(body["count"], 3);
    let ns: Vec<i64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![0, 1, 2]);
    assert_eq!(body["timestamp"], body["messages"][2]["timestamp"]);
    let since = body["timestamp"].to_string();
    let body = get(&pg.url(&format!("/api/poll/c?since={since}&max=1000&timeout=0")))
        .await
        .json();
    assert_eq!(body["count"], 2);
    assert_eq!(body["timestamp"], last["timestamp"]);
}

#[tokio::test]
async fn a_cursor_older_than_the_buffer_is_a_gap() {
    let pg = Pollgate::start(&yaml(None, "buffer: { max_size: 3 }\n")).await;
    let first = pg.publish("c", json!({"n": 0})).await;
    for n in 1..5 {
        pg.publish("c", json!({"n": n})).await;
    }
    let since = first["timestamp"].to_string();
    let body = get(&pg.url(&format!("/api/poll/c?since={since}&timeout=0")))
        .await
        .json();
    assert_eq!(body["gap"], true);
    assert_eq!(body["data"]["n"], 2, "the oldest message still held");
    let body = get(&pg.url(&format!("/api/poll/c?since={since}&max=10&timeout=0")))
        .await
        .json();
    assert_eq!(body["gap"], true);
    assert_eq!(body["count"], 3);
    // Following on from the gap answer is gap-free.
    let next = body["messages"][0]["timestamp"].to_string();
    let body = get(&pg.url(&format!("/api/poll/c?since={next}&timeout=0")))
        .await
        .json();
    assert!(body.get("gap").is_none());
    assert_eq!(body["data"]["n"], 3);
    // since=0 asks for the oldest held: never a gap.
    assert!(get(&pg.url("/api/poll/c?since=0&timeout=0"))
        .await
        .json()
        .get("gap")
        .is_none());
    // An unknown last_id cannot be proven safe either.
    let body = get(&pg.url(&format!(
        "/api/poll/c?last_id={}&timeout=0",
        uuid::Uuid::new_v4()
    )))
    .await
    .json();
    assert_eq!(body["gap"], true);
}

#[tokio::test]
async fn invalid_inputs_are_400_naming_the_parameter() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let cases = [
        ("/api/poll/a%2Fb", "channel"),
        ("/api/poll/a/b", "channel"),
        ("/api/poll/", "channel"),
        ("/api/poll/%FF%FE", "channel"),
        (&format!("/api/poll/{}", "x".repeat(201)), "channel"),
        ("/api/poll/c?timeout=-1", "timeout"),
        ("/api/poll/c?timeout=NaN", "timeout"),
        ("/api/poll/c?timeout=inf", "timeout"),
        ("/api/poll/c?timeout=1e309", "timeout"),
        ("/api/poll/c?timeout=soon", "timeout"),
        ("/api/poll/c?since=-5", "since"),
        ("/api/poll/c?since=abc", "since"),
        ("/api/poll/c?since=1e309", "since"),
        ("/api/poll/c?max=0", "max"),
        ("/api/poll/c?max=1001", "max"),
        ("/api/poll/c?last_id=42", "last_id"),
    ];
    for (path, param) in cases {
        let reply = get(&pg.url(path)).await;
        assert_eq!(reply.status, 400, "{path}");
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(param), "{path}: {error}");
    }
    assert_eq!(pg.metrics.held(), 0, "a refused poll holds nothing");
}

#[tokio::test]
async fn cors_preflight_and_headers_per_route() {
    let config = "listen: \"127.0.0.1:0\"\nwebhook: { listen: \"127.0.0.1:0\" }\nroutes:\n  - prefix: /api/poll/\n    poll: { cors: { allow_origins: [\"https://app.example\"] } }\n";
    let pg = Pollgate::start(config).await;
    let pre = send(
        http::Request::options(pg.url("/api/poll/c"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-client-id")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(pre.headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("GET"));
    assert_eq!(pre.headers["access-control-allow-headers"], "x-client-id");
    let ok = send(
        http::Request::get(pg.url("/api/poll/c?timeout=0"))
            .header("origin", "https://app.example")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let other = send(
        http::Request::get(pg.url("/api/poll/c?timeout=0"))
            .header("origin", "https://evil.example")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn five_thousand_waiters_all_receive_one_publish() {
    const N: usize = 5000;
    let pg = Pollgate::start(&yaml(
        None,
        "limits: { max_per_client: 100000, max_per_address: 100000 }\n",
    ))
    .await;
    let addr = pg.public;
    let waiters: Vec<_> = (0..N)
        .map(|_| tokio::spawn(async move { raw_get(addr, "/api/poll/fan?timeout=60").await }))
        .collect();
    pg.held(N).await;
    let published = pg.publish("fan", json!({"hello": "all"})).await;
    for w in waiters {
        let (status, body) = w.await.unwrap().unwrap();
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["data"]["id"], published["message_id"]);
    }
    pg.held(0).await;
}

#[tokio::test]
async fn a_client_that_disconnects_is_forgotten() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let addr = pg.public;
    let waiter = tokio::spawn(async move { raw_get(addr, "/api/poll/gone?timeout=60").await });
    pg.held(1).await;
    let info = get(&pg.hook("/channels/gone")).await.json();
    assert_eq!(info["waiters"], 1);
    waiter.abort();
    pg.held(0).await;
    let reply = get(&pg.hook("/channels/gone")).await;
    assert_eq!(
        reply.status, 404,
        "an empty channel without waiters is freed: {}",
        reply.body
    );
}

/// A client follows the cursor through 1,000 messages published at ~200/s
/// while its connection is cut 10 times: each message arrives exactly once,
/// in order.
#[tokio::test]
async fn a_cursor_follower_survives_cut_connections_without_loss() {
    const TOTAL: i64 = 1000;
    let pg = Pollgate::start(&yaml(None, "")).await;
    let hook = pg.hook("/publish/follow");
    // Start from a cursor taken before the first publish.
    let start = get(&pg.url("/api/poll/follow?timeout=0")).await.json()["timestamp"].to_string();
    let publisher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for n in 0..TOTAL {
            tick.tick().await;
            let (status, body) = post_json(&hook, &json!({"n": n}).to_string()).await;
            assert_eq!(status, 200, "{body}");
        }
    });
    let base = pg.url("/api/poll/follow");
    let mut since = start;
    let mut received = Vec::new();
    let mut cuts = 0;
    let mut polls = 0u64;
    while received.len() < TOTAL as usize {
        polls += 1;
        let url = format!("{base}?since={since}&timeout=5");
        let fetch = get(&url);
        // Every 7th poll is cut after a few ms, mid-hold or mid-answer.
        if cuts < 10 && polls % 7 == 0 {
            if tokio::time::timeout(Duration::from_millis(3), fetch)
                .await
                .is_err()
            {
                cuts += 1;
            }
            continue;
        }
        let body = fetch.await.json();
        if body["status"] == "message" {
            assert!(body.get("gap").is_none());
            received.push(body["data"]["n"].as_i64().unwrap());
        }
        since = body["timestamp"].to_string();
    }
    publisher.await.unwrap();
    assert!(cuts >= 10, "only {cuts} cuts happened");
    let expected: Vec<i64> = (0..TOTAL).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn shutdown_answers_held_polls_with_timeout_at_once() {
    let pg = Pollgate::start(&yaml(
        None,
        "limits: { max_per_client: 1000, max_per_address: 100000 }\n",
    ))
    .await;
    let addr = pg.public;
    let waiters: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(
                async move { raw_get(addr, &format!("/api/poll/s{}?timeout=60", i % 7)).await },
            )
        })
        .collect();
    pg.held(100).await;
    let started = tokio::time::Instant::now();
    pg.stop().await;
    for w in waiters {
        let (status, body) = w.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["status"],
            "timeout"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused"
    );
}
