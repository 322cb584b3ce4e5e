//! Operations: metrics that move, health endpoints, and the signal-driven
//! lifecycle of the real binary.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::raw;
use crate::support::*;
use serde_json::json;

async fn metrics(pg: &Pollgate) -> HashMap<String, f64> {
    let reply = get(&pg.hook("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        reply.body.contains("# HELP pollgate_polls_held"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("# TYPE pollgate_polls counter"),
        "{}",
        reply.body
    );
    scrape(&reply.body)
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// Each metric (absent counts as 0) has its expected value.
fn expect(m: &HashMap<String, f64>, table: &[(&str, f64)]) {
    for (key, want) in table {
        assert_eq!(value(m, key), *want, "{key}");
    }
}

#[tokio::test]
async fn metrics_move_with_polls_publishes_and_proxied_requests() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    let before = metrics(&pg).await;
    assert_eq!(value(&before, "pollgate_config_generation"), 0.0);

    let held = tokio::spawn({
        let url = pg.url("/api/poll/m?timeout=30");
        async move { get(&url).await }
    });
    pg.held(1).await;
    let during = metrics(&pg).await;
    assert_eq!(
        value(&during, "pollgate_polls_held{route=\"/api/poll/\"}"),
        1.0
    );
    assert_eq!(value(&during, "pollgate_channels"), 1.0);

    pg.publish("m", json!({"x": 1})).await;
    held.await.unwrap();
    get(&pg.url("/api/poll/m?timeout=0")).await;
    get(&pg.url("/api/poll/bad%2Fname")).await;
    post_json(&pg.hook("/publish/m"), "not json").await;
    get(&pg.url("/api/things")).await;
    get(&pg.url("/teapot")).await;

    let after = metrics(&pg).await;
    expect(
        &after,
        &[
            ("pollgate_polls_held{route=\"/api/poll/\"}", 0.0),
            ("pollgate_polls_total{outcome=\"message\"}", 1.0),
            ("pollgate_polls_total{outcome=\"timeout\"}", 1.0),
            ("pollgate_polls_total{outcome=\"rejected_invalid\"}", 1.0),
            ("pollgate_publishes_total{result=\"accepted\"}", 1.0),
            ("pollgate_publishes_total{result=\"rejected\"}", 1.0),
            ("pollgate_messages_delivered_total", 1.0),
            ("pollgate_delivery_latency_seconds_count", 1.0),
        ],
    );
    assert_eq!(
        value(
            &after,
            "pollgate_proxy_requests_total{route=\"/\",class=\"2xx\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "pollgate_proxy_requests_total{route=\"/\",class=\"4xx\"}"
        ),
        1.0
    );
    expect(
        &after,
        &[
            ("pollgate_proxy_duration_seconds_count{route=\"/\"}", 2.0),
            ("pollgate_buffered_messages", 1.0),
            ("pollgate_wakeups_missed_total", 0.0),
            ("pollgate_broker_up", 1.0),
        ],
    );
}

#[tokio::test]
async fn upstream_errors_and_reloads_are_counted() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut pg = Pollgate::start(&yaml(Some(dead), "")).await;
    assert_eq!(get(&pg.url("/x")).await.status, 502);
    pg.rewrite(&yaml(Some(dead), "poll: { default_timeout: 5s }\n"))
        .await;
    pg.rewrite("not: [valid").await;
    let m = metrics(&pg).await;
    assert_eq!(
        value(
            &m,
            "pollgate_upstream_errors_total{upstream=\"app\",kind=\"connect\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "pollgate_proxy_requests_total{route=\"/\",class=\"5xx\"}"
        ),
        1.0
    );
    expect(
        &m,
        &[
            ("pollgate_config_reloads_total{result=\"ok\"}", 1.0),
            ("pollgate_config_reloads_total{result=\"failed\"}", 1.0),
            ("pollgate_config_generation", 1.0),
        ],
    );
    assert_eq!(
        m.keys()
            .filter(|k| k.starts_with("pollgate_config_info{"))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_client_gone_mid_hold_is_its_own_outcome() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let addr = pg.public;
    let w = tokio::spawn(async move { raw_get(addr, "/api/poll/g?timeout=30").await });
    pg.held(1).await;
    w.abort();
    pg.held(0).await;
    let m = metrics(&pg).await;
    assert_eq!(
        value(&m, "pollgate_polls_total{outcome=\"client_gone\"}"),
        1.0
    );
}

#[tokio::test]
async fn health_endpoints_live_only_on_the_webhook_listener() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    assert_eq!(get(&pg.hook("/healthz")).await.json()["status"], "ok");
    assert_eq!(get(&pg.hook("/readyz")).await.status, 200);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            get(&pg.url(path)).await.status,
            404,
            "{path} on the public listener"
        );
    }
}

/// The real binary, started with a config file; addresses read from its
/// JSON log.
struct Binary {
    child: Child,
    public: std::net::SocketAddr,
    webhook: std::net::SocketAddr,
    /// Log messages, in order.
    log: std::sync::mpsc::Receiver<String>,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Binary {
    fn start(yaml: &str) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pollgate.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = pollgate_bin()
            .arg("--config")
            .arg(&path)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info,pollgate::access=warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let (public, webhook) = loop {
            let line = lines
                .next()
                .expect("pollgate exited before listening")
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "pollgate listening" {
                break (
                    v["public"].as_str().unwrap().parse().unwrap(),
                    v["webhook"].as_str().unwrap().parse().unwrap(),
                );
            }
        };
        // Keep draining the log so the child never blocks on a full pipe;
        // the messages are kept for tests that look for one.
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let _ = tx.send(v["message"].as_str().unwrap_or_default().to_owned());
            }
        });
        Binary {
            child,
            public,
            webhook,
            log,
            path,
            _dir: dir,
        }
    }

    /// Waits for a log line with this message.
    fn logged(&self, message: &str) {
        loop {
            let line = self
                .log
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("never logged {message:?}"));
            if line == message {
                return;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    async fn exit_code(self, within: Duration) -> Option<i32> {
        let mut child = self.child;
        let waited = tokio::task::spawn_blocking(move || child.wait());
        let status = tokio::time::timeout(within, waited)
            .await
            .expect("pollgate did not exit");
        status.unwrap().unwrap().code()
    }
}

async fn held_in_metrics(webhook: std::net::SocketAddr, n: f64) {
    let url = format!("http://{webhook}/metrics");
    for _ in 0..500 {
        let m = scrape(&get(&url).await.body);
        if value(&m, "pollgate_polls_held{route=\"/api/poll/\"}") == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never saw {n} held polls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_held_polls_and_drains_proxied_requests() {
    let up = Upstream::start("app").await;
    let bin = Binary::start(&yaml(
        Some(up.addr),
        "limits: { max_per_client: 100000, max_per_address: 100000 }\n",
    ));
    let public = bin.public;
    let polls: Vec<_> = (0..1000)
        .map(|i| {
            tokio::spawn(async move {
                raw_get(public, &format!("/api/poll/t{}?timeout=60", i % 10)).await
            })
        })
        .collect();
    held_in_metrics(bin.webhook, 1000.0).await;
    let slow = tokio::spawn(async move { raw_get(public, "/slow?ms=1500").await });
    up.received("/slow").await;

    let signalled = tokio::time::Instant::now();
    bin.signal("TERM");
    for p in polls {
        let (status, body) = p.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("\"status\":\"timeout\""), "{body}");
    }
    // Answered by the shutdown, not let run into the drain deadline
    // (`shutdown.drain_timeout`, 10 s) nor their own (60 s).
    let answered = signalled.elapsed();
    assert!(
        answered < pollgate::defaults::SHUTDOWN_DRAIN_TIMEOUT,
        "held polls took {answered:?}"
    );
    // Each serving thread drops its listener as it sees the signal, which
    // may be just after another thread answered the polls: the listener
    // must be gone soon, and stay gone.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(public).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "new connections are refused");
    let (status, _) = slow.await.unwrap().unwrap();
    assert_eq!(status, 200, "the in-flight proxied request completed");
    assert_eq!(bin.exit_code(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let up = Upstream::start("app").await;
    let bin = Binary::start(&yaml(Some(up.addr), "shutdown: { drain_timeout: 30s }\n"));
    let public = bin.public;
    let slow = tokio::spawn(async move { raw_get(public, "/slow?ms=20000").await });
    up.received("/slow").await;
    bin.signal("TERM");
    bin.logged("stopping: held polls are answered, in-flight requests drain");
    bin.signal("INT");
    // Logs go through a writer thread: what was logged just before the
    // forced exit is still written out.
    bin.logged("second stop signal: exiting without waiting for the drain");
    assert_eq!(bin.exit_code(Duration::from_secs(3)).await, Some(130));
    slow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let up = Upstream::start("app").await;
    let bin = Binary::start(&yaml(Some(up.addr), ""));
    bin.signal("HUP");
    bin.logged("SIGHUP: reloading config");
    bin.logged("config reloaded");
    // A bad file is rejected and pollgate keeps serving.
    std::fs::write(&bin.path, "routes: [").unwrap();
    bin.logged("config rejected; the running config stays in force");
    assert_eq!(
        get(&format!("http://{}/api/x", bin.public)).await.status,
        200
    );
    bin.signal("TERM");
    assert_eq!(bin.exit_code(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_went_away_does_not_stop_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pollgate.yaml");
    std::fs::write(&path, yaml(None, "")).unwrap();
    let mut child = pollgate_bin()
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("pollgate listening")));
    // The reader goes away: every later log line fails to write.
    drop(lines);
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let pid = child.id().to_string();
    let waited = tokio::task::spawn_blocking(move || child.wait());
    let Ok(status) = tokio::time::timeout(Duration::from_secs(10), waited).await else {
        // Kill it, or the runtime would wait for it forever.
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("pollgate did not exit after SIGTERM");
    };
    assert_eq!(status.unwrap().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_does_not_stall_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pollgate.yaml");
    std::fs::write(&path, yaml(None, "")).unwrap();
    let mut child = Reaped(
        pollgate_bin()
            .arg("--config")
            .arg(&path)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info") // one access line per request
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let (public, webhook): (std::net::SocketAddr, std::net::SocketAddr) = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "pollgate listening" {
            break (
                v["public"].as_str().unwrap().parse().unwrap(),
                v["webhook"].as_str().unwrap().parse().unwrap(),
            );
        }
    };
    // From here on nobody reads: the pipe fills, then the writer thread's
    // buffer, then its queue of `defaults::LOG_QUEUE_LINES` lines.
    let per_connection = (pollgate::defaults::LOG_QUEUE_LINES + 3_000) / 4;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            tokio::spawn(async move {
                let mut conn = raw::connect(public).await;
                for i in 0..per_connection {
                    raw::get_on(&mut conn, "/api/poll/logs?timeout=0").await;
                    let answered =
                        tokio::time::timeout(Duration::from_secs(5), raw::answer(&mut conn, false))
                            .await
                            .map(|a| a.status);
                    assert_eq!(answered, Ok(200), "connection {c}: request {i} stalled");
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    // The drops are counted, and a scrape reads the count as it is.
    let metrics = get(&format!("http://{webhook}/metrics")).await;
    let dropped = value(&scrape(&metrics.body), "pollgate_log_lines_dropped_total");
    assert!(dropped > 0.0, "dropped lines are counted");
    drop(lines);
}

/// A child process killed when the test ends, passed or failed (a stalled
/// pollgate would otherwise outlive the test and hold its output pipes).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
