//! The internal webhook listener: publishing and its error answers.

use crate::support::*;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

#[tokio::test]
async fn publish_with_nobody_waiting_is_buffered() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let published = pg.publish("later", json!({"x": 1})).await;
    let info = get(&pg.hook("/channels/later")).await.json();
    assert_eq!(info["buffered"], 1);
    assert_eq!(info["waiters"], 0);
    assert_eq!(info["last_timestamp"], published["timestamp"]);
    let body = get(&pg.url("/api/poll/later?since=0&timeout=0"))
        .await
        .json();
    assert_eq!(body["data"]["x"], 1);
}

#[tokio::test]
async fn a_batch_publishes_in_order_and_lists_each_item() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let batch = json!({"items": [
        {"channel": "a", "data": {"n": 1}},
        {"channel": "b", "data": {"n": 2}},
        {"channel": "a", "data": {"n": 3}},
    ]});
    let (status, body) = post_json(&pg.hook("/publish"), &batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[1]["channel"], "b");
    assert!(items[2]["timestamp"].as_f64() > items[0]["timestamp"].as_f64());
    let a = get(&pg.url("/api/poll/a?since=0&max=10&timeout=0"))
        .await
        .json();
    let ns: Vec<i64> = a["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![1, 3]);
    assert_eq!(a["messages"][0]["id"], items[0]["message_id"]);
}

#[tokio::test]
async fn a_bad_batch_item_publishes_nothing() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let batch = json!({"items": [
        {"channel": "ok", "data": {"n": 1}},
        {"channel": "bad/name", "data": {"n": 2}},
    ]});
    let (status, body) = post_json(&pg.hook("/publish"), &batch.to_string()).await;
    assert_eq!(status, 400);
    assert!(body.contains("items[1]"), "{body}");
    let batch =
        json!({"items": [{"channel": "ok", "data": {"n": 1}}, {"channel": "ok", "data": [1]}]});
    assert_eq!(
        post_json(&pg.hook("/publish"), &batch.to_string()).await.0,
        400
    );
    assert_eq!(
        get(&pg.hook("/channels/ok")).await.status,
        404,
        "nothing half-published"
    );
}

#[tokio::test]
async fn bad_bodies_are_rejected_with_the_documented_statuses() {
    let pg = Pollgate::start(
        &yaml(
            None,
            "webhook: { listen: \"127.0.0.1:0\", max_body: 1KiB }\n",
        )
        .replace("webhook: { listen: \"127.0.0.1:0\" }\n", ""),
    )
    .await;
    let url = pg.hook("/publish/c");
    for (body, status) in [
        ("not json", 400),
        ("[1,2]", 400),
        ("\"s\"", 400),
        ("", 400),
        ("{\"a\":", 400),
    ] {
        let (got, text) = post_json(&url, body).await;
        assert_eq!(got, status, "{body:?}: {text}");
        assert!(serde_json::from_str::<Value>(&text).unwrap()["error"].is_string());
    }
    let big = json!({"pad": "x".repeat(2048)}).to_string();
    assert_eq!(post_json(&url, &big).await.0, 413);
    // Without Content-Length (chunked), the limit still holds.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::convert::Infallible>(
        hyper::body::Frame::data(bytes::Bytes::from(big)),
    )]);
    let req = Request::post(&url)
        .body(http_body_util::StreamBody::new(stream))
        .unwrap();
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
        .request(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(post_json(&pg.hook("/publish/a%2Fb"), "{}").await.0, 400);
    assert_eq!(
        get(&pg.hook("/channels/c")).await.status,
        404,
        "nothing was stored"
    );
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    assert_eq!(get(&pg.hook("/nope")).await.status, 404);
    let reply = get(&pg.hook("/publish/c")).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers["allow"], "POST");
    assert!(reply.json()["error"].is_string());
    let put = send(
        Request::put(pg.hook("/healthz"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(put.status, 405);
    assert_eq!(get(&pg.hook("/healthz")).await.status, 200);
    assert_eq!(get(&pg.hook("/readyz")).await.status, 200);
}

#[tokio::test]
async fn the_public_listener_never_publishes() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    for path in ["/publish/c", "/api/publish/c"] {
        let (status, body) = post_json(&pg.url(path), "{\"x\":1}").await;
        assert_eq!(status, 200);
        let echo: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            echo["upstream"], "app",
            "{path} went to the app like any request"
        );
    }
    let no_upstream = Pollgate::start(&yaml(None, "")).await;
    assert_eq!(post_json(&no_upstream.url("/publish/c"), "{}").await.0, 404);
    assert_eq!(get(&pg.hook("/channels/c")).await.status, 404);
}

#[tokio::test]
async fn concurrent_publishes_get_unique_increasing_timestamps() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let url = pg.hook("/publish/race");
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move { post_json(&url, &json!({"n": n}).to_string()).await })
        })
        .collect();
    let mut stamps = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        stamps.push(serde_json::from_str::<Value>(&body).unwrap()["timestamp"].to_string());
    }
    let unique: std::collections::HashSet<_> = stamps.iter().collect();
    assert_eq!(unique.len(), 200);
    let all = get(&pg.url("/api/poll/race?since=0&max=1000&timeout=0"))
        .await
        .json();
    let ts: Vec<f64> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["timestamp"].as_f64().unwrap())
        .collect();
    assert_eq!(ts.len(), 200);
    assert!(ts.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn the_status_json_filters_channels_by_name_past_the_busiest_listed() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    // 60 channels with two messages each, and `weather` with one: the
    // busiest 50 listed leave it out.
    let mut items: Vec<Value> = (0..60)
        .flat_map(|i| [0, 1].map(|n| json!({ "channel": format!("busy-{i}"), "data": { "n": n } })))
        .collect();
    items.push(json!({ "channel": "weather", "data": {} }));
    let (status, body) = post_json(
        &format!("http://{}/publish", pg.webhook),
        &json!({ "items": items }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let status_of = |query: &'static str| {
        let url = format!("http://{}/status{query}", pg.webhook);
        async move { get(&url).await.json() }
    };
    let all = status_of("").await;
    assert_eq!(
        (all["channels_total"].as_u64(), all["matched"].as_u64()),
        (Some(61), Some(61))
    );
    let listed = all["channels"].as_array().unwrap();
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|c| c["channel"] != "weather"), "{all}");
    assert_eq!(all["broker"], json!({ "kind": "memory", "ready": true }));
    // Any case, any part of the name.
    let some = status_of("?channel=EAT").await;
    assert_eq!(some["matched"], 1);
    assert_eq!(
        some["channels"],
        json!([{ "channel": "weather", "waiters": 0, "buffered": 1 }])
    );
    let none = status_of("?channel=nothing-like-it").await;
    assert_eq!(
        (
            none["matched"].as_u64(),
            none["channels"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn the_status_history_answers_whatever_it_is_asked() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    for query in [
        "",
        "?after=0",
        "?after=abc",
        "?after=-1",
        "?after=99999999999999999999999",
    ] {
        let reply = get(&format!("http://{}/status/history{query}", pg.webhook)).await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        let h = reply.json();
        assert_eq!(
            (h["interval_ms"].as_u64(), h["capacity"].as_u64()),
            (
                Some(pollgate::defaults::STATUS_SAMPLE_EVERY.as_millis() as u64),
                Some(pollgate::defaults::STATUS_SAMPLES as u64)
            ),
            "{h}"
        );
        assert!(
            h["started"].as_u64().is_some_and(|t| t > 1_700_000_000_000),
            "{h}"
        );
        assert!(h["samples"].is_array(), "{h}");
    }
}
