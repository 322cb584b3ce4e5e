//! Server-Sent Events on poll routes: the same channels and cursors as long
//! polls, read by an SSE client no one here wrote (the `eventsource` npm
//! package, tests/sse/) and, for the bytes themselves, through hyper.

mod bounds;
mod client;
mod wire;

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::certs::Ca;
use crate::support::{get, redis, yaml, Pollgate};

const WAIT: Duration = Duration::from_secs(20);

/// Installs the `eventsource` package once per test process, or says why it
/// cannot be: then the test is skipped loudly, unless POLLGATE_REQUIRE_NODE
/// is set (CI), where it fails.
fn eventsource() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sse");
        if dir.join("node_modules/eventsource").exists() {
            return Ok(());
        }
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("npm: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    match ready {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var("POLLGATE_REQUIRE_NODE").is_err(),
                "POLLGATE_REQUIRE_NODE is set but the eventsource package could not be installed: {why}"
            );
            eprintln!("\n*** SKIPPED: the eventsource package is unavailable ({why}) ***\n");
            false
        }
    }
}

/// The `eventsource` package following one URL (tests/sse/follow.mjs):
/// every event it saw, as JSON lines. Killed on drop.
struct Follower {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Follower {
    fn start(url: &str, last_event_id: Option<&str>) -> Follower {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sse");
        let mut cmd = Command::new("node");
        cmd.arg("follow.mjs").arg(url).current_dir(dir);
        if let Some(id) = last_event_id {
            cmd.arg(id);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Follower { child, lines }
    }

    /// The next event the library dispatched (`ready`, `message`, `gap`);
    /// `open` and `error` are the library's own and are skipped.
    async fn next(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .expect("no event from the eventsource client")
                .unwrap()
                .expect("the eventsource client exited");
            let event: Value = serde_json::from_str(&line).unwrap();
            if event["type"] != "open" && event["type"] != "error" {
                return event;
            }
        }
    }

    /// The next `message` event's data, checking its id is its timestamp.
    async fn message(&mut self) -> Value {
        let event = self.next().await;
        assert_eq!(event["type"], "message", "{event}");
        let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            event["id"].as_str().unwrap(),
            stamp(&data["timestamp"]),
            "the event id is the message's cursor"
        );
        data
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A timestamp as its cursor text (six decimals, as pollgate writes it).
fn stamp(t: &Value) -> String {
    format!("{:.6}", t.as_f64().unwrap())
}

/// One event stream read through hyper's HTTP/1 client: the bytes as sent.
struct Raw {
    status: u16,
    headers: http::HeaderMap,
    body: Incoming,
    text: String,
}

impl Raw {
    async fn open(pg: &Pollgate, target: &str, headers: &[(&str, &str)]) -> Raw {
        let tcp = tokio::net::TcpStream::connect(pg.public).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::get(target)
            .header("host", "x")
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = send
            .send_request(req.body(Full::<Bytes>::default()).unwrap())
            .await
            .unwrap();
        Raw::answered(resp)
    }

    /// A stream opened some other way (HTTP/2, TLS).
    fn answered(resp: http::Response<Incoming>) -> Raw {
        let (parts, body) = resp.into_parts();
        Raw {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            text: String::new(),
        }
    }

    /// Reads until the text so far contains `pat`.
    async fn until(&mut self, pat: &str) -> &str {
        let read = async {
            // Only the new text is searched: a test reading megabytes must
            // not itself be the slow client.
            let mut from = 0;
            while !self.text[from..].contains(pat) {
                from = self.text.len().saturating_sub(pat.len());
                while !self.text.is_char_boundary(from) {
                    from -= 1;
                }
                match self.body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            self.text.push_str(std::str::from_utf8(&d).unwrap());
                        }
                    }
                    other => panic!("stream ended before {pat:?}: {other:?}\n{}", self.text),
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("no {pat:?} in {:?}", self.text));
        &self.text
    }

    /// Reads to the body's clean end; returns all the text.
    async fn read_to_end(&mut self) -> &str {
        let read = async {
            while let Some(frame) = self.body.frame().await {
                if let Ok(d) = frame.expect("the stream was cut, not ended").into_data() {
                    self.text.push_str(std::str::from_utf8(&d).unwrap());
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("the stream did not end");
        &self.text
    }
}

/// The events in `text`, each as its field lines.
fn events(text: &str) -> Vec<Vec<&str>> {
    text.split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|b| b.lines().collect())
        .collect()
}

/// `retry:` asks for 2 to 3 s (spread so that streams ended together come
/// back apart).
fn assert_retry(line: &str) {
    let ms: u64 = line
        .strip_prefix("retry: ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a retry line: {line:?}"));
    assert!((2000..3000).contains(&ms), "{line}");
}
