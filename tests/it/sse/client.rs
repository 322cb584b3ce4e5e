//! Read by the `eventsource` npm package: what a client library sees,
//! across reconnects and a restarted pollgate.

use super::*;

#[tokio::test]
async fn a_library_client_gets_the_buffer_then_live_messages_with_long_poll_cursors() {
    if !eventsource() {
        return;
    }
    let pg = Pollgate::start(&yaml(None, "")).await;
    let m1 = pg
        .publish("lib", json!({"n": 1, "text": "two\nlines"}))
        .await;
    let m2 = pg.publish("lib", json!({"n": 2})).await;
    let mut es = Follower::start(&pg.url("/api/poll/lib?since=0"), None);
    let ready = es.next().await;
    assert_eq!(
        (&ready["type"], &ready["id"]),
        (&json!("ready"), &json!("0.000000"))
    );
    let first = es.message().await;
    let second = es.message().await;
    assert_eq!(first["text"], "two\nlines");
    assert_eq!(
        (first["id"].clone(), second["id"].clone()),
        (m1["message_id"].clone(), m2["message_id"].clone())
    );
    // Exactly what a long poll returns as `data`.
    let long = get(&pg.url("/api/poll/lib?since=0&max=10")).await.json();
    assert_eq!(long["messages"], json!([first, second]));
    let m3 = pg.publish("lib", json!({"n": 3})).await;
    let live = es.message().await;
    assert_eq!(live["id"], m3["message_id"]);
}

#[tokio::test]
async fn last_event_id_resumes_right_after_that_message() {
    if !eventsource() {
        return;
    }
    let pg = Pollgate::start(&yaml(None, "")).await;
    let stamps: Vec<String> = {
        let mut s = Vec::new();
        for n in 0..3 {
            s.push(stamp(
                &pg.publish("resume", json!({"n": n})).await["timestamp"],
            ));
        }
        s
    };
    // The header wins over the `since` a reconnect's URL still carries.
    let mut es = Follower::start(&pg.url("/api/poll/resume?since=0"), Some(&stamps[0]));
    assert_eq!(
        es.next().await["id"],
        json!(stamps[0]),
        "ready names the start"
    );
    assert_eq!(es.message().await["n"], 1);
    assert_eq!(es.message().await["n"], 2);
}

#[tokio::test]
async fn a_restarted_pollgate_on_redis_loses_and_repeats_nothing() {
    if !eventsource() {
        return;
    }
    let Some(url) = redis::shared_url().await else {
        return;
    };
    // A fixed port: the client reconnects to the same address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\nroutes:\n  - {{ prefix: /api/poll/, poll: {{}} }}\n{}",
        redis::broker_yaml(&url, &redis::prefix())
    );
    let pg = Pollgate::start(&config).await;
    pg.metric_reaches("pollgate_broker_up", 1.0).await;
    let mut es = Follower::start(&pg.url("/api/poll/restart"), None);
    assert_eq!(es.next().await["type"], "ready");
    let mut sent = Vec::new();
    for n in 0..2 {
        sent.push(pg.publish("restart", json!({"n": n})).await["message_id"].clone());
    }
    assert_eq!(es.message().await["id"], sent[0]);
    assert_eq!(es.message().await["id"], sent[1]);
    pg.stop().await;
    let pg = Pollgate::start(&config).await;
    pg.metric_reaches("pollgate_broker_up", 1.0).await;
    // Published before the client is back (it waits `retry:`): from the buffer.
    for n in 2..4 {
        sent.push(pg.publish("restart", json!({"n": n})).await["message_id"].clone());
    }
    let ready = es.next().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(es.message().await["id"], sent[2]);
    assert_eq!(es.message().await["id"], sent[3]);
    sent.push(pg.publish("restart", json!({"n": 4})).await["message_id"].clone());
    assert_eq!(
        es.message().await["id"],
        sent[4],
        "live again, nothing repeated"
    );
}
