//! `pollgate publish` and `pollgate tail` against a running pollgate.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use crate::support::pollgate_bin as pollgate;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_prints_the_id_and_timestamp_and_fails_loudly() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let webhook = format!("http://{}", pg.webhook);
    let out = pollgate()
        .args([
            "publish",
            "--webhook",
            &webhook,
            "news",
            r#"{"text":"from a shell"}"#,
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (id, ts) = line.split_once(' ').unwrap();
    uuid::Uuid::parse_str(id).unwrap();
    let body = get(&pg.url("/api/poll/news?since=0&timeout=0"))
        .await
        .json();
    assert_eq!(body["data"]["id"], id);
    assert_eq!(body["timestamp"].to_string(), ts);
    assert_eq!(body["data"]["text"], "from a shell");

    // JSON from stdin.
    let mut child = pollgate()
        .args(["publish", "--webhook", &webhook, "news"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"via":"stdin"}"#)
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    // Errors: pollgate's own message, non-zero exit.
    let out = pollgate()
        .args(["publish", "--webhook", &webhook, "news", "[1,2]"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a JSON object"));
    let out = pollgate()
        .args(["publish", "--webhook", "http://127.0.0.1:9", "news", "{}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_each_message_as_a_json_line() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    for n in 0..3 {
        pg.publish("feed", serde_json::json!({"n": n})).await;
    }
    let url = format!("http://{}/api/poll/", pg.public);
    let mut child = pollgate()
        .args(["tail", "--url", &url, "--since", "0", "feed"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .take(4)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    pg.held(1).await;
    pg.publish("feed", serde_json::json!({"n": 3})).await;
    let lines = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let ns: Vec<i64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, vec![0, 1, 2, 3]);
}
