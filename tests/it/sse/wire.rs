//! The bytes on the wire: negotiation, the opening, gaps, heartbeats.

use super::*;

#[tokio::test]
async fn only_a_get_asking_for_event_streams_gets_one_and_a_route_can_refuse() {
    let up = "routes:\n  - { prefix: /api/poll/, poll: {} }\n  - { prefix: /plain/, poll: { sse: false } }\n";
    let pg = Pollgate::start(&format!(
        "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\n{up}"
    ))
    .await;
    let stream = Raw::open(&pg, "/api/poll/neg", &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-store");
    let any = get(&pg.url("/api/poll/neg?timeout=0")).await;
    assert_eq!(any.headers["content-type"], "application/json");
    let mut refused = Raw::open(&pg, "/plain/neg?timeout=0", &[]).await;
    assert_eq!(refused.headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(refused.read_to_end().await).unwrap();
    assert_eq!(body["status"], "timeout");
    let bad = Raw::open(&pg, "/api/poll/neg", &[("last-event-id", "soon")]).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn a_start_older_than_the_buffer_gets_one_gap_event_then_what_is_left() {
    let pg = Pollgate::start(&yaml(None, "buffer: { max_size: 2 }\n")).await;
    let mut stamps = Vec::new();
    for n in 0..5 {
        stamps.push(stamp(
            &pg.publish("gap", json!({"n": n})).await["timestamp"],
        ));
    }
    let mut s = Raw::open(&pg, "/api/poll/gap", &[("last-event-id", &stamps[0])]).await;
    let text = s.until(&format!("id: {}\n", stamps[4])).await.to_owned();
    let evs = events(&text);
    assert_retry(evs[0][0]);
    assert_eq!(evs[0][2], "event: ready");
    let gap = &evs[1];
    assert_eq!(gap[1], "event: gap", "{text}");
    let from = gap[0].strip_prefix("id: ").unwrap();
    assert!(
        from < stamps[3].as_str() && from >= stamps[2].as_str(),
        "{text}"
    );
    assert_eq!(evs[2][0], format!("id: {}", stamps[3]));
    assert_eq!(evs[3][0], format!("id: {}", stamps[4]));
    assert_eq!(
        evs.len(),
        4,
        "one gap, then only what the buffer has: {text}"
    );
    // Resuming from the gap's id is no gap: the stream continues from there.
    let mut again = Raw::open(&pg, "/api/poll/gap", &[("last-event-id", from)]).await;
    let text = again.until(&format!("id: {}\n", stamps[4])).await;
    assert!(!text.contains("event: gap"), "{text}");
}

/// A `Last-Event-ID` from the future (the host's clock stepped back, a
/// Redis failover to a node whose clock is behind): a gap event at once,
/// whose id is not in the future, and the stream goes on from there.
#[tokio::test]
async fn a_start_from_the_future_gets_a_gap_and_goes_on_from_now() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    pg.publish("ahead", json!({"n": "before"})).await;
    let mut s = Raw::open(&pg, "/api/poll/ahead", &[("last-event-id", "99999999999")]).await;
    let text = s.until("event: gap\n").await.to_owned();
    let text = format!("{text}{}", s.until("\n\n").await);
    let evs = events(&text);
    assert_eq!(evs[0][2], "event: ready", "{text}");
    let gap = &evs[1];
    assert_eq!(gap[1], "event: gap", "{text}");
    let from: f64 = gap[0].strip_prefix("id: ").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(from <= now + 1.0, "{text}");
    let later = stamp(&pg.publish("ahead", json!({"n": "after"})).await["timestamp"]);
    let text = s.until(&format!("id: {later}\n")).await;
    assert!(!text.contains("before"), "goes on from now: {text}");
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats_and_ends_cleanly_at_its_max_duration() {
    let pg = Pollgate::start(&yaml(
        None,
        "poll: { sse_heartbeat: 200ms, sse_max_duration: 1500ms }\n",
    ))
    .await;
    let mut s = Raw::open(&pg, "/api/poll/idle", &[]).await;
    s.until("\n:\n\n:\n\n").await;
    let text = s.read_to_end().await.to_owned();
    assert_retry(text.lines().next().unwrap_or_default());
    let beats = text.matches(":\n\n").count();
    assert!(
        (3..=9).contains(&beats),
        "{beats} heartbeats in ~1.4 s: {text}"
    );
    pg.metric_reaches(
        "pollgate_sse_streams_ended_total{outcome=\"max_duration\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_catch_up_longer_than_one_read_arrives_whole_on_redis() {
    let Some(url) = redis::shared_url().await else {
        return;
    };
    let pg = Pollgate::start(&yaml(None, &redis::broker_yaml(&url, &redis::prefix()))).await;
    pg.metric_reaches("pollgate_broker_up", 1.0).await;
    // 250 messages on a channel nobody here waits on: more than one read
    // (100) brings, and nothing will be published after them.
    let mut last = String::new();
    for n in 0..250 {
        last = stamp(&pg.publish("long", json!({ "n": n })).await["timestamp"]);
    }
    let mut s = Raw::open(&pg, "/api/poll/long?since=0", &[]).await;
    let text = s.until(&format!("id: {last}\n")).await;
    assert_eq!(text.matches("event: message").count(), 250);
    // The same for long polls: three batches of at most 100, in a row.
    let mut since = "0".to_owned();
    let mut got = 0;
    while got < 250 {
        let r = get(&pg.url(&format!("/api/poll/long?since={since}&max=100&timeout=5"))).await;
        let body = r.json();
        assert_eq!(body["status"], "messages", "after {got}: {body}");
        got += body["count"].as_u64().unwrap();
        since = stamp(&body["timestamp"]);
    }
    assert_eq!(got, 250);
}
