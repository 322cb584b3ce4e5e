//! GRIP against the real libraries: a backend written with Python's
//! `gripcontrol` and one with Node's `@fanoutio/serve-grip` (tests/grip/),
//! each answering with hold instructions and publishing with its library's
//! own publisher to pollgate's webhook. Every scenario runs on both.

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{client, redis, tools, Pollgate};

const KEY: &str = "grip-test-key-of-thirty-two-bytes!";
const TOKEN: &str = "grip-test-token-0123456789";

#[derive(Clone, Copy, Debug)]
enum Lang {
    Python,
    Node,
}

/// Installs the libraries once per test process (a venv and `npm ci`), or
/// says why they cannot be: then the test is skipped loudly, unless
/// POLLGATE_REQUIRE_GRIP is set (CI), where it fails.
fn deps() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grip");
        tools::venv(&dir)?;
        if !dir.join("node_modules/@fanoutio/serve-grip").exists() {
            tools::run_in(
                &dir,
                std::process::Command::new("npm").args([
                    "ci",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                ]),
            )?;
        }
        Ok(())
    });
    match ready {
        Ok(()) => true,
        Err(why) => {
            tools::skip(
                "POLLGATE_REQUIRE_GRIP",
                &format!("the GRIP libraries could not be installed ({why})"),
                "GRIP against the real libraries",
            );
            false
        }
    }
}

/// A backend process, killed on drop.
struct Backend {
    addr: std::net::SocketAddr,
    _child: Child,
}

impl Backend {
    async fn start(lang: Lang, publish_to: std::net::SocketAddr) -> Backend {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grip");
        let mut cmd = match lang {
            Lang::Python => {
                let mut c = Command::new(dir.join(".venv/bin/python"));
                c.arg(dir.join("backend.py"));
                c
            }
            Lang::Node => {
                let mut c = Command::new("node");
                c.arg(dir.join("backend.mjs"));
                c
            }
        };
        cmd.env("GRIP_KEY", KEY)
            .env("GRIP_ISS", "pollgate")
            .env("PUBLISH_URL", format!("http://{publish_to}"))
            .env("PUBLISH_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("backend starts");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("backend says LISTENING within 30 s")
            .expect("backend stdout")
            .expect("a line");
        let port: u16 = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Backend {
            addr: ([127, 0, 0, 1], port).into(),
            _child: child,
        }
    }

    /// Asks the backend to publish with its library; panics unless acknowledged.
    async fn publish(&self, query: &str) {
        self.ask("publish", query).await
    }

    /// `count` stream items in order, each acknowledged before the next.
    async fn publish_many(&self, query: &str) {
        self.ask("publish-many", query).await
    }

    async fn ask(&self, what: &str, query: &str) {
        let url = format!("http://{}/{what}?{query}", self.addr);
        let (status, body) = client::post_json(&url, "").await;
        assert_eq!(status, 200, "backend publish {query}: {body}");
    }
}

fn grip_yaml(backend: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\", token: {TOKEN} }}\n\
         upstreams:\n  app: {{ url: \"http://{backend}\" }}\n\
         routes:\n  - {{ prefix: /api/poll/, poll: {{}} }}\n\
         \x20 - {{ prefix: /, upstream: app, timeout: 10s, grip: {{ sig_key: {KEY}, min_timeout: 1s }} }}\n{extra}"
    )
}

/// pollgate in front of a backend that publishes to it. The backend must
/// know the webhook's port and pollgate the backend's: pollgate starts on a
/// placeholder upstream, then the config is rewritten to the backend.
async fn stack(lang: Lang, extra: &str) -> Option<(Pollgate, Backend)> {
    if !deps() {
        return None;
    }
    let mut pg = Pollgate::start(&grip_yaml(([127, 0, 0, 1], 9).into(), extra)).await;
    let backend = Backend::start(lang, pg.webhook).await;
    let reloaded = pg.rewrite(&grip_yaml(backend.addr, extra)).await;
    assert_eq!(reloaded.failed, 0, "the config naming the backend loads");
    Some((pg, backend))
}

async fn get(pg: &Pollgate, path: &str) -> client::Reply {
    client::get(&pg.url(path)).await
}

/// Opens a streamed response and hands back its body to read as it comes.
async fn open(pg: &Pollgate, path: &str) -> (http::response::Parts, Incoming) {
    let req = Request::get(pg.url(path))
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = client::client().request(req).await.expect("stream opens");
    resp.into_parts()
}

/// Reads `body` into `seen` until `done(seen)` (30 s at most); `false` when
/// the body ended first.
async fn read_until(body: &mut Incoming, seen: &mut String, done: impl Fn(&str) -> bool) -> bool {
    let read = async {
        while !done(seen) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        seen.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                _ => return false,
            }
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("stream stalled; so far: {seen:?}"))
}

/// GRIP holds ended so far with `mode` and `outcome` (the webhook wants
/// its token, as the libraries send it).
async fn ended(pg: &Pollgate, mode: &str, outcome: &str) -> f64 {
    let req = Request::get(pg.hook("/metrics"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::default())
        .unwrap();
    let text = client::send(req).await.body;
    let series = format!("pollgate_grip_holds_total{{mode=\"{mode}\",outcome=\"{outcome}\"}}");
    crate::support::scrape(&text)
        .get(&series)
        .copied()
        .unwrap_or(0.0)
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn python() {
                super::$name(super::Lang::Python).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn node() {
                super::$name(super::Lang::Node).await
            }
        }
    )*};
}

on_both!(
    the_app_accepts_pollgates_signature_and_plain_answers_pass,
    a_publish_releases_a_response_hold,
    the_json_instruction_form_holds_too,
    the_timeout_answer_is_the_apps_own,
    a_hold_on_several_channels_is_released_by_any,
    a_stale_prev_id_asks_the_app_again_with_grip_last,
    a_stream_hold_receives_a_hundred_items_in_order_then_closes,
    an_idle_stream_gets_keep_alives,
    an_item_published_while_the_app_answers_is_not_lost,
);

async fn the_app_accepts_pollgates_signature_and_plain_answers_pass(lang: Lang) {
    let Some((pg, _backend)) = stack(lang, "").await else {
        return;
    };
    let sig = get(&pg, "/sig").await;
    assert_eq!(sig.json()["valid"], true, "{lang:?}: {}", sig.body);
    let plain = get(&pg, "/plain").await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (StatusCode::OK, "plain")
    );
    // A client's own Grip-Sig is not passed on: the app sees pollgate's.
    let forged = client::send(
        Request::get(pg.url("/sig"))
            .header("grip-sig", "forged")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(forged.json()["valid"], true, "{}", forged.body);
    pg.stop().await;
}

async fn a_publish_releases_a_response_hold(lang: Lang) {
    let Some((pg, backend)) = stack(lang, "").await else {
        return;
    };
    let held = {
        let url = pg.url("/hold/response?channels=r1&timeout=20");
        tokio::spawn(async move { client::get(&url).await })
    };
    pg.held(1).await;
    backend
        .publish("channel=r1&kind=response&body=hello&id=1")
        .await;
    let reply = held.await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello"),
        "{lang:?}"
    );
    assert_eq!(reply.headers["content-type"], "text/plain");
    assert!(reply
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("grip-")));
    pg.held(0).await;
    let ended = ended(&pg, "response", "message").await;
    assert_eq!(ended, 1.0);
    pg.stop().await;
}

async fn the_json_instruction_form_holds_too(lang: Lang) {
    let Some((pg, backend)) = stack(lang, "").await else {
        return;
    };
    let url = pg.url("/hold/instruct?channels=j1&timeout=20");
    let held = tokio::spawn(async move { client::get(&url).await });
    pg.held(1).await;
    backend
        .publish("channel=j1&kind=response&body=json-form")
        .await;
    assert_eq!(held.await.unwrap().body, "json-form", "{lang:?}");
    let timed_out = get(&pg, "/hold/instruct?channels=j2&timeout=1").await;
    assert_eq!(timed_out.json()["status"], "timeout", "{lang:?}");
    assert_eq!(timed_out.headers["x-sig-valid"], "true");
    pg.stop().await;
}

async fn the_timeout_answer_is_the_apps_own(lang: Lang) {
    let Some((pg, _backend)) = stack(lang, "").await else {
        return;
    };
    let reply = get(&pg, "/hold/response?channels=t1&timeout=1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "timeout", "{lang:?}");
    // The app validated pollgate's Grip-Sig on the request it held.
    assert_eq!(reply.headers["x-sig-valid"], "true");
    assert!(reply
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("grip-")));
    let ended = ended(&pg, "response", "timeout").await;
    assert_eq!(ended, 1.0);
    pg.stop().await;
}

async fn a_hold_on_several_channels_is_released_by_any(lang: Lang) {
    let Some((pg, backend)) = stack(lang, "").await else {
        return;
    };
    let held = {
        let url = pg.url("/hold/response?channels=m1,m2,m3&timeout=20");
        tokio::spawn(async move { client::get(&url).await })
    };
    pg.held(1).await;
    backend.publish("channel=m3&kind=response&body=third").await;
    let reply = held.await.unwrap();
    assert_eq!(reply.body, "third", "{lang:?}");
    pg.stop().await;
}

async fn a_stale_prev_id_asks_the_app_again_with_grip_last(lang: Lang) {
    let Some((pg, backend)) = stack(lang, "").await else {
        return;
    };
    backend
        .publish("channel=p1&kind=response&body=one&id=1")
        .await;
    backend
        .publish("channel=p1&kind=response&body=two&id=2&prev=1")
        .await;
    // The app's answer covers up to "0", which the channel has passed and
    // the buffer cannot place: pollgate asks again, saying so (as Pushpin).
    let reply = get(&pg, "/hold/response?channels=p1&timeout=20&prev=0").await;
    let caught: serde_json::Value = reply.json();
    assert_eq!(caught["status"], "caught-up", "{lang:?}: {}", reply.body);
    assert_eq!(caught["last"]["p1"], "0");
    // The app's answer covers up to "1", which the buffer has: item "2"
    // goes out at once, without asking the app again.
    let reply = get(&pg, "/hold/response?channels=p1&timeout=20&prev=1").await;
    assert_eq!(reply.body, "two", "{lang:?}");
    // Up to date: held until the next item.
    let held = {
        let url = pg.url("/hold/response?channels=p1&timeout=20&prev=2");
        tokio::spawn(async move { client::get(&url).await })
    };
    pg.held(1).await;
    backend
        .publish("channel=p1&kind=response&body=three&id=3&prev=2")
        .await;
    assert_eq!(held.await.unwrap().body, "three");
    let retries = ended(&pg, "response", "retry").await;
    assert_eq!(retries, 1.0);
    pg.stop().await;
}

async fn a_stream_hold_receives_a_hundred_items_in_order_then_closes(lang: Lang) {
    let Some((pg, backend)) = stack(lang, "").await else {
        return;
    };
    let (head, mut body) = open(&pg, "/hold/stream?channel=s1").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("grip-")));
    let mut seen = String::new();
    assert!(read_until(&mut body, &mut seen, |s| s.contains("stream-start\n")).await);
    backend.publish_many("channel=s1&count=100&prefix=m").await;
    let want: String = (0..100).map(|i| format!("m{i}\n")).collect();
    assert!(
        read_until(&mut body, &mut seen, |s| s.len()
            >= "stream-start\n".len() + want.len())
        .await
    );
    assert_eq!(seen, format!("stream-start\n{want}"), "{lang:?}");
    backend.publish("channel=s1&kind=close").await;
    // The close ends the response: the body finishes.
    let finished = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = body.frame().await {
            frame.expect("clean end");
        }
    })
    .await;
    assert!(
        finished.is_ok(),
        "{lang:?}: the stream did not end on close"
    );
    pg.held(0).await;
    let closed = ended(&pg, "stream", "closed").await;
    assert_eq!(closed, 1.0);
    pg.stop().await;
}

async fn an_idle_stream_gets_keep_alives(lang: Lang) {
    let Some((pg, _backend)) = stack(lang, "").await else {
        return;
    };
    let (_, mut body) = open(&pg, "/hold/stream?channel=k1&keepalive=1").await;
    let mut seen = String::new();
    assert!(read_until(&mut body, &mut seen, |s| s.matches("ka\n").count() >= 2).await);
    assert!(seen.starts_with("stream-start\n"), "{lang:?}: {seen:?}");
    pg.stop().await;
}

async fn an_item_published_while_the_app_answers_is_not_lost(lang: Lang) {
    let Some((pg, _backend)) = stack(lang, "").await else {
        return;
    };
    // The backend publishes (and has it acknowledged) before it answers
    // with its hold: Pushpin, which subscribes only then, would hold past it.
    let reply = get(&pg, "/hold/response?channels=race1&timeout=20&race=raced").await;
    assert_eq!(reply.body, "raced", "{lang:?}");
    pg.stop().await;
}

/// Two instances on one Redis: a request held on one is released by a
/// publish to the other's webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_redis_share_grip_channels() {
    let Some(url) = redis::shared_url().await else {
        return;
    };
    for lang in [Lang::Python, Lang::Node] {
        let shared = redis::broker_yaml(&url, &redis::prefix());
        let Some((a, backend_a)) = stack(lang, &shared).await else {
            return;
        };
        let b = Pollgate::start(&grip_yaml(backend_a.addr, &shared)).await;
        // This backend publishes to instance b.
        let backend_b = Backend::start(lang, b.webhook).await;
        let held = {
            let url = a.url("/hold/response?channels=x1&timeout=20");
            tokio::spawn(async move { client::get(&url).await })
        };
        a.held(1).await;
        backend_b
            .publish("channel=x1&kind=response&body=across")
            .await;
        assert_eq!(held.await.unwrap().body, "across", "{lang:?}");
        // And a stream on b receives what is published through a.
        let (_, mut body) = open(&b, "/hold/stream?channel=x2").await;
        let mut seen = String::new();
        assert!(read_until(&mut body, &mut seen, |s| s.contains("stream-start\n")).await);
        backend_a.publish_many("channel=x2&count=3&prefix=r").await;
        assert!(read_until(&mut body, &mut seen, |s| s.ends_with("r2\n")).await);
        assert_eq!(seen, "stream-start\nr0\nr1\nr2\n", "{lang:?}");
        drop(body);
        a.stop().await;
        b.stop().await;
    }
}

// EPCP publishes as any publisher sends them, and the app's mistakes: no
// library needed (the support upstream's `/instruct` answers with whatever
// headers a test names).

fn instructing_yaml(upstream: std::net::SocketAddr) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\n\
         upstreams:\n  app: {{ url: \"http://{upstream}\" }}\n\
         routes:\n  - {{ prefix: /api/poll/, poll: {{}} }}\n\
         \x20 - {{ prefix: /, upstream: app, timeout: 10s, grip: {{ min_timeout: 1s }} }}\n"
    )
}

async fn epcp(pg: &Pollgate, path: &str, body: &str, accept: Option<&str>) -> client::Reply {
    let mut req = Request::post(pg.hook(path)).header("content-type", "application/json");
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    client::send(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

#[tokio::test]
async fn epcp_publishes_are_acknowledged_as_pushpin_acknowledges_them() {
    let pg = Pollgate::start(&crate::support::yaml(None, "")).await;
    let item = r#"{"items": [{"channel": "e1", "http-stream": {"content": "x"}}]}"#;
    for path in ["/publish/", "/publish"] {
        let text = epcp(&pg, path, item, None).await;
        assert_eq!(
            (text.status, text.body.as_str()),
            (StatusCode::OK, "Published\n"),
            "{path}"
        );
        assert_eq!(text.headers["content-type"], "text/plain");
        let json = epcp(&pg, path, item, Some("application/json")).await;
        assert_eq!(json.json(), serde_json::json!({"message": "Published"}));
    }
    for (body, says) in [
        ("{", "EOF"),
        (r#"{"items": [{"http-stream": {}}]}"#, "channel"),
        (
            r#"{"items": [{"channel": "e1", "formats": {}}]}"#,
            "no formats",
        ),
        (
            r#"{"items": [{"channel": "e1", "http-response": {"code": 7}}]}"#,
            "http-response: code",
        ),
        (
            r#"{"items": [{"channel": "e1", "http-stream": {}}, {"channel": "e1", "data": {}}]}"#,
            "cannot share",
        ),
    ] {
        let reply = epcp(&pg, "/publish/", body, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains(says), "{body}: {error}");
    }
    pg.stop().await;
}

#[tokio::test]
async fn a_repeated_id_is_published_once_and_native_pollers_see_items_whole() {
    let pg = Pollgate::start(&crate::support::yaml(None, "")).await;
    let item = |id: &str| {
        format!(
            r#"{{"items": [{{"channel": "d1", "id": "{id}", "formats": {{"http-response": {{"body": "b{id}"}}}}}}]}}"#
        )
    };
    for id in ["1", "1", "2", "1"] {
        assert_eq!(
            epcp(&pg, "/publish/", &item(id), None).await.status,
            StatusCode::OK
        );
    }
    let polled = client::get(&pg.url("/api/poll/d1?since=0&max=10"))
        .await
        .json();
    let messages = polled["messages"].as_array().expect("a batch").clone();
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| m["grip"]["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["1", "2"], "{polled}");
    assert_eq!(
        messages[0]["grip"]["formats"],
        serde_json::json!({"http-response": {"body": "b1"}})
    );
    pg.stop().await;
}

#[tokio::test]
async fn a_native_publish_releases_a_grip_hold_with_a_poll_answer() {
    let app = crate::support::Upstream::start("app").await;
    let pg = Pollgate::start(&instructing_yaml(app.addr)).await;
    let url = pg.url("/instruct?h=Grip-Hold:response&h=Grip-Channel:n1&body=later");
    let held = tokio::spawn(async move { client::get(&url).await });
    pg.held(1).await;
    pg.publish("n1", serde_json::json!({"text": "native"}))
        .await;
    let reply = held.await.unwrap();
    assert_eq!(reply.headers["content-type"], "application/json");
    let answer = reply.json();
    assert_eq!(
        (answer["status"].as_str(), answer["data"]["text"].as_str()),
        (Some("message"), Some("native"))
    );
    pg.stop().await;
}

#[tokio::test]
async fn the_apps_mistakes_are_its_own_and_grip_status_shapes_the_timeout() {
    let app = crate::support::Upstream::start("app").await;
    let pg = Pollgate::start(&instructing_yaml(app.addr)).await;
    let bad = get(&pg, "/instruct?h=Grip-Hold:forever&h=Grip-Channel:a").await;
    assert_eq!(bad.status, StatusCode::BAD_GATEWAY);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("GRIP instructions"),
        "{}",
        bad.body
    );
    assert_eq!(
        pg.metric("pollgate_upstream_errors_total{upstream=\"app\",kind=\"grip_instruct\"}")
            .await,
        1.0
    );
    let timed_out = get(
        &pg,
        "/instruct?h=Grip-Hold:response&h=Grip-Channel:g1&h=Grip-Timeout:1&h=Grip-Status:404%20Gone&h=X-App:kept&body=bye",
    )
    .await;
    assert_eq!(
        (timed_out.status, timed_out.body.as_str()),
        (StatusCode::NOT_FOUND, "bye")
    );
    assert_eq!(timed_out.headers["x-app"], "kept");
    assert!(timed_out
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("grip-")));
    // A body too large to keep for asking the app again is the client's 413.
    let big = client::send(
        Request::post(pg.url("/instruct"))
            .body(Full::new(Bytes::from(vec![b'x'; 1024 * 1024 + 1])))
            .unwrap(),
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    pg.stop().await;
}

#[tokio::test]
async fn the_app_is_asked_without_compression_or_the_clients_grip_headers() {
    let app = crate::support::Upstream::start("app").await;
    let pg = Pollgate::start(&instructing_yaml(app.addr)).await;
    let echo = client::send(
        Request::get(pg.url("/echo"))
            .header("accept-encoding", "gzip")
            .header("grip-last", "forged; last-id=1")
            .body(Full::default())
            .unwrap(),
    )
    .await
    .json();
    let headers = &echo["headers"];
    assert!(headers.get("accept-encoding").is_none(), "{echo}");
    assert!(headers.get("grip-last").is_none(), "{echo}");
    // No key configured: no signature either.
    assert!(headers.get("grip-sig").is_none(), "{echo}");
    pg.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_a_quiet_stream_frees_its_place() {
    let app = crate::support::Upstream::start("app").await;
    let pg = Pollgate::start(&instructing_yaml(app.addr)).await;
    let (head, mut body) = open(
        &pg,
        "/instruct?h=Grip-Hold:stream&h=Grip-Channel:q1&body=hi",
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    let mut seen = String::new();
    assert!(read_until(&mut body, &mut seen, |s| s == "hi").await);
    pg.held(1).await;
    // Gone without a word, on a channel where nothing is published and with
    // no keep-alive to write: the slot is still given back.
    drop(body);
    pg.held(0).await;
    pg.metric_reaches(
        "pollgate_grip_holds_total{mode=\"stream\",outcome=\"client_gone\"}",
        1.0,
    )
    .await;
    pg.stop().await;
}

#[tokio::test]
async fn pass_through_answers_keep_their_framing_on_every_method() {
    let app = crate::support::Upstream::start("app").await;
    let pg = Pollgate::start(&instructing_yaml(app.addr)).await;
    let head = client::send(
        Request::head(pg.url("/instruct?body=hello"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], "5", "{:?}", head.headers);
    assert_eq!(head.body, "");
    let get = get(&pg, "/instruct?body=hello").await;
    assert_eq!((get.status, get.body.as_str()), (StatusCode::OK, "hello"));
    pg.stop().await;
}
