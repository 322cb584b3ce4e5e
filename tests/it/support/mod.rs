//! Test harness: a real upstream app, real pollgate listeners on 127.0.0.1:0,
//! and small HTTP clients. Everything is torn down on drop.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod client;
pub mod raw;
pub mod redis;
pub mod tools;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pollgate::config::reload::ReloadStats;
use pollgate::config::Config;
use pollgate::{Listeners, Options, Running};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use client::*;
pub use upstream::Upstream;

/// A pollgate instance on ephemeral ports, with its config in a temp file
/// (so tests can rewrite it and watch the reload).
pub struct Pollgate {
    pub public: SocketAddr,
    pub webhook: SocketAddr,
    pub shutdown: CancellationToken,
    pub metrics: pollgate::metrics::Metrics,
    pub reloads: watch::Receiver<ReloadStats>,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
    running: Option<Running>,
}

/// A minimal config: one poll route and, when `upstream` is given, proxy
/// routes to it. `extra` is appended verbatim (top-level YAML keys).
pub fn yaml(upstream: Option<SocketAddr>, extra: &str) -> String {
    let mut y = String::from("listen: \"127.0.0.1:0\"\nwebhook: { listen: \"127.0.0.1:0\" }\n");
    if let Some(up) = upstream {
        y.push_str(&format!(
            "upstreams:\n  app: {{ url: \"http://{up}\", connect_timeout: 1s }}\n"
        ));
        y.push_str("routes:\n  - { prefix: /api/poll/, poll: {} }\n  - { prefix: /, upstream: app, timeout: 5s }\n");
    } else {
        y.push_str("routes:\n  - { prefix: /api/poll/, poll: {} }\n");
    }
    y.push_str(extra);
    y
}

impl Pollgate {
    pub async fn start(yaml: &str) -> Pollgate {
        // RUST_LOG=debug shows pollgate's logs under the failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("pollgate.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        let listeners = Listeners::bind(&config).await.unwrap();
        let running = pollgate::start(
            config,
            listeners,
            Options {
                config_path: Some(config_path.clone()),
                reload: None,
            },
        )
        .unwrap();
        Pollgate {
            public: running.public_addr,
            webhook: running.webhook_addr,
            shutdown: running.shutdown.clone(),
            metrics: running.metrics.clone(),
            reloads: running.reloads.clone(),
            config_path,
            _dir: dir,
            running: Some(running),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn hook(&self, path: &str) -> String {
        format!("http://{}{path}", self.webhook)
    }

    /// The `/metrics` page, as text.
    pub async fn metrics_text(&self) -> String {
        client::get(&self.hook("/metrics")).await.body
    }

    /// The value of one series (`pollgate_x_total{k="v"}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        scrape(&self.metrics_text().await)
            .get(series)
            .copied()
            .unwrap_or(0.0)
    }

    /// Waits until `series` is at least `min`. A counter has no event to
    /// await but its own value: this scrapes until it moves (30 s at most).
    pub async fn metric_reaches(&self, series: &str, min: f64) {
        let wait = async {
            while self.metric(series).await < min {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .is_err()
        {
            panic!(
                "{series} never reached {min} (now {})",
                self.metric(series).await
            );
        }
    }

    /// Waits until exactly `n` polls are held.
    pub async fn held(&self, n: usize) {
        let mut rx = self.metrics.held_changes();
        let wait = rx.wait_for(|held| *held == n);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for {n} held polls (now {})",
                    self.metrics.held()
                )
            })
            .unwrap();
    }

    /// Publishes `body` to `channel`; returns the JSON answer.
    pub async fn publish(&self, channel: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, body) = post_json(
            &self.hook(&format!("/publish/{channel}")),
            &body.to_string(),
        )
        .await;
        assert_eq!(status, 200, "publish failed: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Rewrites the config file and waits until the reload outcome counter moves.
    pub async fn rewrite(&mut self, yaml: &str) -> ReloadStats {
        let before = *self.reloads.borrow_and_update();
        std::fs::write(&self.config_path, yaml).unwrap();
        let changed = self
            .reloads
            .wait_for(|s| s.ok + s.failed > before.ok + before.failed);
        tokio::time::timeout(Duration::from_secs(10), changed)
            .await
            .expect("no reload happened")
            .unwrap();
        let now = *self.reloads.borrow();
        now
    }

    /// Stops like SIGTERM and waits for the drain to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
    }
}

impl Drop for Pollgate {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `name{labels}` -> value, from the Prometheus text format.
pub fn scrape(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Resident memory of this process (test client + pollgate), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Asserts that a command exited 0, showing its stderr if not.
pub fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pollgate binary of this build.
pub fn pollgate_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_pollgate"))
}

/// `pollgate check --config PATH`.
pub fn check(path: &std::path::Path) -> std::process::Output {
    pollgate_bin()
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap()
}

/// Runs `node --test FILE` in `dir` with `env`, and asserts it passed
/// `passes` tests (its TAP output is shown when it did not).
pub async fn node_test(dir: &str, file: &str, env: &[(&str, String)], passes: usize) {
    let mut cmd = tokio::process::Command::new("node");
    cmd.args(["--test", file]).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("# pass {passes}\n")), "{stdout}");
}
