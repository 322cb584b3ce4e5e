//! The Redis broker: the broker contract, several instances sharing
//! channels, and what happens when Redis goes away or loses its data.

use std::time::Duration;

use crate::support::redis::{broker_yaml, prefix, shared_url, RedisServer};
use crate::support::*;
use serde_json::{json, Value};

/// The wire contract every broker must keep, checked through real listeners.
async fn broker_contract(extra: &str) {
    let pg = Pollgate::start(&yaml(None, &format!("{extra}buffer: {{ max_size: 3 }}\n"))).await;
    ready(&pg).await;

    // A held poll is released by a publish.
    let waiter = tokio::spawn({
        let url = pg.url("/api/poll/c1?timeout=30");
        async move { get(&url).await }
    });
    pg.held(1).await;
    let published = pg.publish("c1", json!({"hello": 1})).await;
    let body = waiter.await.unwrap().json();
    assert_eq!(body["status"], "message");
    assert_eq!(body["data"]["id"], published["message_id"]);
    assert_eq!(body["timestamp"], published["timestamp"]);

    // Without since: only later messages.
    assert_eq!(
        get(&pg.url("/api/poll/c1?timeout=0.2")).await.json()["status"],
        "timeout"
    );

    // since is a lossless cursor; max batches; last_id works.
    let mut stamps = Vec::new();
    for n in 0..3 {
        stamps.push(pg.publish("c2", json!({"n": n})).await);
    }
    let mut since = "0".to_owned();
    for n in 0..3 {
        let b = get(&pg.url(&format!("/api/poll/c2?since={since}&timeout=0")))
            .await
            .json();
        assert_eq!(b["data"]["n"], n);
        assert!(b.get("gap").is_none());
        since = b["timestamp"].to_string();
    }
    let timeout = get(&pg.url(&format!("/api/poll/c2?since={since}&timeout=0")))
        .await
        .json();
    assert_eq!(timeout["status"], "timeout");
    let b = get(&pg.url("/api/poll/c2?since=0&max=10&timeout=0"))
        .await
        .json();
    assert_eq!(b["count"], 3);
    let id = stamps[0]["message_id"].as_str().unwrap();
    let b = get(&pg.url(&format!("/api/poll/c2?last_id={id}&timeout=0")))
        .await
        .json();
    assert_eq!(b["data"]["n"], 1);

    // The timeout's timestamp is a cursor too.
    let mark = timeout["timestamp"].to_string();
    pg.publish("c2", json!({"n": 3})).await;
    let b = get(&pg.url(&format!("/api/poll/c2?since={mark}&timeout=5")))
        .await
        .json();
    assert_eq!(b["data"]["n"], 3);

    // Trimmed past the cursor: gap, with the oldest held.
    pg.publish("c2", json!({"n": 4})).await;
    let b = get(&pg.url(&format!(
        "/api/poll/c2?since={}&timeout=0",
        stamps[0]["timestamp"]
    )))
    .await
    .json();
    assert_eq!(b["gap"], true);
    assert_eq!(b["data"]["n"], 2);

    // A start point from the future (a clock stepped back, a restored
    // history): a gap at once (the hold would otherwise pass over every
    // message stamped before it), with the oldest held...
    let ahead = "99999999999";
    let b = get(&pg.url(&format!("/api/poll/c2?since={ahead}&timeout=30")))
        .await
        .json();
    assert_eq!(
        (&b["gap"], &b["data"]["n"]),
        (&json!(true), &json!(2)),
        "{b}"
    );
    // ...or, with none held, a timeout whose cursor is not in the future,
    // from which a later message is delivered.
    let b = get(&pg.url(&format!("/api/poll/c3?since={ahead}&timeout=30")))
        .await
        .json();
    assert_eq!(
        (&b["status"], &b["gap"]),
        (&json!("timeout"), &json!(true)),
        "{b}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(b["timestamp"].as_f64().unwrap() <= now + 1.0, "{b}");
    let later = pg.publish("c3", json!({"n": "after"})).await;
    let b = get(&pg.url(&format!("/api/poll/c3?since={}&timeout=5", b["timestamp"])))
        .await
        .json();
    assert_eq!(b["data"]["id"], later["message_id"], "{b}");
    assert!(b.get("gap").is_none());
}

#[tokio::test]
async fn the_memory_broker_keeps_the_contract() {
    broker_contract("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_broker_keeps_the_contract() {
    let Some(url) = shared_url().await else {
        return;
    };
    broker_contract(&broker_yaml(&url, &prefix())).await;
}

async fn cluster(url: &str, n: usize) -> Vec<Pollgate> {
    let p = prefix();
    let mut out = Vec::new();
    for _ in 0..n {
        let pg = Pollgate::start(&yaml(
            None,
            &format!(
                "{}limits: {{ max_per_client: 1000, max_per_address: 100000 }}\n",
                broker_yaml(url, &p)
            ),
        ))
        .await;
        ready(&pg).await;
        out.push(pg);
    }
    out
}

async fn ready(pg: &Pollgate) {
    for _ in 0..500 {
        if get(&pg.hook("/readyz")).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("instance never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_any_instance_reaches_waiters_on_every_instance() {
    let Some(url) = shared_url().await else {
        return;
    };
    let pgs = cluster(&url, 3).await;
    for (round, publisher) in pgs.iter().enumerate() {
        let waiters: Vec<_> = pgs
            .iter()
            .flat_map(|pg| (0..3).map(move |_| pg.url("/api/poll/shared?timeout=30")))
            .map(|url| tokio::spawn(async move { get(&url).await }))
            .collect();
        for pg in &pgs {
            pg.held(3).await;
        }
        let published = publisher.publish("shared", json!({"round": round})).await;
        for w in waiters {
            let b = w.await.unwrap().json();
            assert_eq!(b["data"]["round"], round);
            assert_eq!(b["data"]["id"], published["message_id"]);
        }
    }
}

/// No sticky sessions: every poll of one client lands on another instance,
/// while 1,000 messages are published on all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_alternating_instances_gets_every_message_once_in_order() {
    const TOTAL: i64 = 1000;
    let Some(url) = shared_url().await else {
        return;
    };
    let pgs = cluster(&url, 2).await;
    let hooks: Vec<String> = pgs.iter().map(|pg| pg.hook("/publish/alt")).collect();
    let start = get(&pgs[0].url("/api/poll/alt?timeout=0")).await.json()["timestamp"].to_string();
    let publisher = tokio::spawn(async move {
        for n in 0..TOTAL {
            let (status, body) =
                post_json(&hooks[n as usize % 2], &json!({"n": n}).to_string()).await;
            assert_eq!(status, 200, "{body}");
        }
    });
    let mut since = start;
    let mut received = Vec::new();
    let mut polls = 0usize;
    while received.len() < TOTAL as usize {
        let pg = &pgs[polls % 2];
        polls += 1;
        let b = get(&pg.url(&format!("/api/poll/alt?since={since}&max=7&timeout=5")))
            .await
            .json();
        assert!(b.get("gap").is_none(), "{b}");
        if b["status"] == "messages" {
            received.extend(
                b["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["n"].as_i64().unwrap()),
            );
        }
        since = b["timestamp"].to_string();
    }
    publisher.await.unwrap();
    assert_eq!(received, (0..TOTAL).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_503_for_publishes_and_not_ready_then_recovery() {
    let Some(mut redis) = RedisServer::start_or_skip("Redis going down and coming back") else {
        return;
    };
    let _ = redis.data_dir();
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), &broker_yaml(&redis.url(), &prefix()))).await;
    ready(&pg).await;
    let before = pg.publish("r", json!({"n": 0})).await;
    let cursor = before["timestamp"].to_string();
    let held = tokio::spawn({
        let url = pg.url(&format!("/api/poll/r?since={cursor}&timeout=60"));
        async move { get(&url).await }
    });
    pg.held(1).await;

    redis.kill();
    // Not ready within a few seconds; publishes refused at once, never a false 200.
    let mut status = 0;
    for _ in 0..300 {
        status = get(&pg.hook("/readyz")).await.status.as_u16();
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 503);
    let ready_body = get(&pg.hook("/readyz")).await.json();
    assert_eq!(ready_body["error"], "broker unavailable");
    let started = tokio::time::Instant::now();
    let (status, body) = post_json(&pg.hook("/publish/r"), "{\"n\":1}").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "broker unavailable"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        get(&pg.url("/api/x")).await.status,
        200,
        "proxying is unaffected"
    );
    if held.is_finished() {
        panic!("held polls stay held, but: {:?}", held.await.unwrap());
    }

    redis.restart();
    ready(&pg).await;
    pg.publish("r", json!({"n": 2})).await;
    let b = held.await.unwrap().json();
    assert_eq!(b["data"]["n"], 2, "{b}");
    // What was accepted before the outage is still in the history.
    let b = get(&pg.url("/api/poll/r?since=0&max=10&timeout=0"))
        .await
        .json();
    let ns: Vec<i64> = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![0, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_history_is_a_gap_not_a_silent_skip() {
    let Some(url) = shared_url().await else {
        return;
    };
    let p = prefix();
    let pg = Pollgate::start(&yaml(None, &broker_yaml(&url, &p))).await;
    ready(&pg).await;
    let first = pg.publish("lost", json!({"n": 0})).await;
    // Redis restarted empty, or the keys were evicted:
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("DEL")
        .arg(format!("{p}{{lost}}:s"))
        .arg(format!("{p}{{lost}}:m"))
        .query_async(&mut conn)
        .await
        .unwrap();
    pg.publish("lost", json!({"n": 1})).await;
    let b = get(&pg.url(&format!(
        "/api/poll/lost?since={}&timeout=0",
        first["timestamp"]
    )))
    .await
    .json();
    assert_eq!(b["gap"], true, "{b}");
    assert_eq!(b["data"]["n"], 1);
}

/// Redis Cluster: channels spread over the slots of three nodes; two
/// instances share them as with a single Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_works_like_a_single_redis() {
    let Some(cluster) = crate::support::redis::RedisCluster::start().await else {
        assert!(
            std::env::var("POLLGATE_REQUIRE_REDIS").is_err(),
            "redis-server and redis-cli are required"
        );
        eprintln!(
            "*** SKIPPED: redis-server / redis-cli not on PATH: Redis Cluster NOT tested ***"
        );
        return;
    };
    let broker = format!(
        "broker: {{ kind: redis, url: \"{}\", key_prefix: \"{}\", cluster: true }}\nlimits: {{ max_per_client: 1000, max_per_address: 100000 }}\n",
        cluster.seed_url(),
        prefix()
    );
    let a = Pollgate::start(&yaml(None, &broker)).await;
    let b = Pollgate::start(&yaml(None, &broker)).await;
    ready(&a).await;
    ready(&b).await;
    // Twenty channels land on different slots, so on different nodes.
    let waiters: Vec<_> = (0..20)
        .map(|i| {
            let url = a.url(&format!("/api/poll/room{i}?timeout=30"));
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    a.held(20).await;
    for i in 0..20 {
        b.publish(&format!("room{i}"), json!({"room": i})).await;
    }
    for (i, w) in waiters.into_iter().enumerate() {
        assert_eq!(w.await.unwrap().json()["data"]["room"], i as i64);
    }
    // History and cursors work across the cluster too.
    let first = b.publish("room0", json!({"n": 1})).await;
    b.publish("room0", json!({"n": 2})).await;
    let body = get(&a.url(&format!(
        "/api/poll/room0?since={}&timeout=0",
        first["timestamp"]
    )))
    .await
    .json();
    assert_eq!(body["data"]["n"], 2);
}

/// Script calls Redis has run, as `INFO commandstats` counts them.
async fn evalsha_calls(url: &str) -> u64 {
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_first_polls_asks_redis_for_the_head_once_not_each() {
    // A Redis of its own: no other test's commands in its counts.
    let Some(redis) = RedisServer::start_or_skip("the head reuse of first polls") else {
        return;
    };
    let pg = Pollgate::start(&yaml(
        None,
        &format!(
            "{}limits: {{ max_per_client: 1000, max_per_address: 1000 }}\n",
            broker_yaml(&redis.url(), &prefix())
        ),
    ))
    .await;
    ready(&pg).await;
    let before = pg.publish("burst", json!({ "n": 0 })).await;
    let first = tokio::spawn({
        let url = pg.url("/api/poll/burst?timeout=30");
        async move { get(&url).await }
    });
    pg.held(1).await;
    let calls = evalsha_calls(&redis.url()).await;
    assert!(
        calls > 0,
        "INFO commandstats shows no scripts: the count reads nothing"
    );
    let burst: Vec<_> = (0..100)
        .map(|_| {
            let url = pg.url("/api/poll/burst?timeout=30");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    pg.held(101).await;
    let asked = evalsha_calls(&redis.url()).await - calls;
    // Each read serves a second (REDIS_HEAD_REUSE): a loaded machine may
    // spread the burst over a few.
    assert!(asked <= 10, "{asked} Redis scripts for 100 first polls");
    // Each starts after the message published before it, and gets the next.
    let published = pg.publish("burst", json!({ "n": 1 })).await;
    for poll in std::iter::once(first).chain(burst) {
        let body = poll.await.unwrap().json();
        assert_eq!(body["data"]["id"], published["message_id"], "{body}");
        assert_ne!(body["data"]["id"], before["message_id"]);
    }
    // A poll that comes right after a publish on this instance starts after
    // it, though a waiter keeps the channel's view alive (read under a
    // second ago): the publish is noted here, or announced by Redis, before
    // the next poll can reuse that view. (On loopback the announcement
    // usually wins the race, so this checks the outcome, not `note` alone.)
    let keeper = tokio::spawn({
        let url = pg.url("/api/poll/burst?timeout=30");
        async move { get(&url).await }
    });
    pg.held(1).await;
    let next = pg.publish("burst", json!({ "n": 2 })).await;
    assert_eq!(
        get(&pg.url("/api/poll/burst?timeout=0.3")).await.json()["status"],
        "timeout"
    );
    assert_eq!(
        keeper.await.unwrap().json()["data"]["id"],
        next["message_id"]
    );
}
