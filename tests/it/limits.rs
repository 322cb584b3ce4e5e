//! Limits, client identity, webhook protection, channel authorization and
//! hostile input.

use std::time::Duration;

use crate::support::*;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn poll_as(
    pg: &Pollgate,
    channel: &str,
    headers: &[(&str, &str)],
) -> tokio::task::JoinHandle<Reply> {
    let mut req = Request::get(pg.url(&format!("/api/poll/{channel}?timeout=30")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::default()).unwrap();
    tokio::spawn(send(req))
}

async fn poll_now(pg: &Pollgate, channel: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(pg.url(&format!("/api/poll/{channel}?timeout=0")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::default()).unwrap()).await
}

fn assert_429(reply: &Reply, error: &str) {
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.json()["error"], error);
    assert_eq!(reply.headers["retry-after"], "1");
}

#[tokio::test]
async fn per_client_limit_counts_the_client_id_header() {
    let pg = Pollgate::start(&yaml(None, "limits: { max_per_client: 2 }\n")).await;
    let a = [("x-client-id", "tab-a")];
    let held: Vec<_> = (0..2).map(|i| poll_as(&pg, &format!("c{i}"), &a)).collect();
    pg.held(2).await;
    assert_429(
        &poll_now(&pg, "c9", &a).await,
        "too many polls from this client",
    );
    assert_eq!(
        poll_now(&pg, "c9", &[("x-client-id", "tab-b")])
            .await
            .status,
        200
    );
    // A refused poll took no slot, and a released one frees its slot.
    pg.publish("c0", serde_json::json!({})).await;
    pg.held(1).await;
    assert_eq!(poll_now(&pg, "c9", &a).await.status, 200);
    for h in held {
        h.abort();
    }
}

#[tokio::test]
async fn per_channel_and_total_limits() {
    let pg = Pollgate::start(&yaml(
        None,
        "limits: { max_per_channel: 2, max_total: 3 }\n",
    ))
    .await;
    let _a = poll_as(&pg, "hot", &[("x-client-id", "a")]);
    let _b = poll_as(&pg, "hot", &[("x-client-id", "b")]);
    pg.held(2).await;
    assert_429(
        &poll_now(&pg, "hot", &[("x-client-id", "c")]).await,
        "channel at capacity",
    );
    let _c = poll_as(&pg, "cold", &[("x-client-id", "c")]);
    pg.held(3).await;
    assert_429(
        &poll_now(&pg, "other", &[("x-client-id", "d")]).await,
        "server at capacity",
    );
    let m = pg.metrics_text().await;
    assert!(
        m.contains("pollgate_polls_total{outcome=\"rejected_limit\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn a_slot_is_freed_when_its_client_disconnects_or_times_out() {
    let pg = Pollgate::start(&yaml(None, "limits: { max_per_client: 1 }\n")).await;
    let addr = pg.public;
    let w = tokio::spawn(async move { raw_get(addr, "/api/poll/d?timeout=30").await });
    pg.held(1).await;
    assert_eq!(poll_now(&pg, "d", &[]).await.status, 429);
    let cut = tokio::time::Instant::now();
    w.abort();
    pg.held(0).await;
    eprintln!("slot freed {:?} after the disconnect", cut.elapsed());
    assert_eq!(
        poll_now(&pg, "d", &[]).await.status,
        200,
        "slot free after disconnect"
    );
    let timed = get(&pg.url("/api/poll/d?timeout=0.1")).await;
    assert_eq!(timed.json()["status"], "timeout");
    assert_eq!(
        poll_now(&pg, "d", &[]).await.status,
        200,
        "slot free after a timeout"
    );
}

#[tokio::test]
async fn a_malformed_client_id_is_400() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let long = "x".repeat(200);
    for bad in ["has space", long.as_str()] {
        let reply = poll_now(&pg, "c", &[("x-client-id", bad)]).await;
        assert_eq!(reply.status, 400);
        assert!(reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("client id"));
    }
}

#[tokio::test]
async fn x_forwarded_for_counts_only_behind_trusted_proxies() {
    let trusted = "limits: { max_per_client: 1 }\nclient_id: { from: addr }\ntrusted_proxies: [\"127.0.0.1/32\"]\n";
    let pg = Pollgate::start(&yaml(None, trusted)).await;
    let _a = poll_as(&pg, "x", &[("x-forwarded-for", "203.0.113.1")]);
    pg.held(1).await;
    assert_eq!(
        poll_now(&pg, "x", &[("x-forwarded-for", "203.0.113.2")])
            .await
            .status,
        200,
        "another client"
    );
    assert_eq!(
        poll_now(&pg, "x", &[("x-forwarded-for", "203.0.113.1")])
            .await
            .status,
        429,
        "same client"
    );
    // from: addr ignores the client id header.
    assert_eq!(
        poll_now(
            &pg,
            "x",
            &[("x-forwarded-for", "203.0.113.1"), ("x-client-id", "other")]
        )
        .await
        .status,
        429
    );

    let untrusted = "limits: { max_per_client: 1 }\nclient_id: { from: addr }\n";
    let pg2 = Pollgate::start(&yaml(None, untrusted)).await;
    let _b = poll_as(&pg2, "x", &[("x-forwarded-for", "203.0.113.1")]);
    pg2.held(1).await;
    assert_eq!(
        poll_now(&pg2, "x", &[("x-forwarded-for", "203.0.113.2")])
            .await
            .status,
        429,
        "without trusted proxies the header is ignored: both are 127.0.0.1"
    );
}

#[tokio::test]
async fn the_webhook_token_is_required_except_for_healthz() {
    let token = "s3cret-token-0123456789";
    let extra = format!("webhook: {{ listen: \"127.0.0.1:0\", token: \"{token}\" }}\n");
    let pg =
        Pollgate::start(&yaml(None, "").replace("webhook: { listen: \"127.0.0.1:0\" }\n", &extra))
            .await;
    let url = pg.hook("/publish/t");
    let (status, body) = post_json(&url, "{}").await;
    assert_eq!(status, 401, "{body}");
    let with = |auth: &str| {
        Request::post(&url)
            .header("authorization", auth.to_owned())
            .body(Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap()
    };
    let wrong = send(with("Bearer wrong-token-0123456789")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.headers["www-authenticate"], "Bearer");
    assert_eq!(send(with(&format!("Bearer {token}"))).await.status, 200);
    assert_eq!(get(&pg.hook("/healthz")).await.status, 200);
    assert_eq!(get(&pg.hook("/metrics")).await.status, 401);
}

#[test]
fn a_webhook_open_to_the_network_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(
        &path,
        "webhook: { listen: \"0.0.0.0:18081\" }\nroutes:\n  - { prefix: /p/, poll: {} }\n",
    )
    .unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set webhook.token"));

    std::fs::write(&path, "webhook: { listen: \"0.0.0.0:18081\", token_env: PG_TEST_TOKEN }\nroutes:\n  - { prefix: /p/, poll: {} }\n").unwrap();
    let out = pollgate_bin()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("PG_TEST_TOKEN", "from-the-environment-123")
        .output()
        .unwrap();
    assert_ok(&out);
    let out = pollgate_bin()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env_remove("PG_TEST_TOKEN")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("PG_TEST_TOKEN"));
}

fn authorize_yaml(up: std::net::SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\nupstreams:\n  app: {{ url: \"http://{up}\", connect_timeout: 1s }}\nroutes:\n  - prefix: /api/poll/\n    poll:\n      authorize: {{ upstream: app, path: {path}, timeout: 500ms{extra} }}\n"
    )
}

#[tokio::test]
async fn authorize_allows_denies_and_passes_the_apps_answer() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&authorize_yaml(up.addr, "/auth/poll", "")).await;
    let ok = poll_now(&pg, "room:1", &[("cookie", "session=good")]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["status"], "timeout");
    let denied = poll_now(&pg, "room:1", &[("cookie", "session=bad")]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["app_says"], 403, "the app's own answer");
    assert_eq!(denied.headers["x-auth-channel"], "channel=room%3A1");
    assert_eq!(poll_now(&pg, "room:1", &[]).await.status, 401);
    assert_eq!(
        up.hits("/auth/poll"),
        3,
        "no cache configured: asked every time"
    );
    assert_eq!(pg.metrics.held(), 0, "nothing held for a refused poll");
}

#[tokio::test]
async fn authorize_caches_a_yes_per_client_and_credentials() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&authorize_yaml(up.addr, "/auth/poll", ", cache: 30s")).await;
    for _ in 0..3 {
        assert_eq!(
            poll_now(&pg, "c", &[("cookie", "session=good")])
                .await
                .status,
            200
        );
    }
    assert_eq!(up.hits("/auth/poll"), 1);
    assert_eq!(
        poll_now(&pg, "c", &[("cookie", "session=bad")])
            .await
            .status,
        403,
        "other credentials are asked"
    );
    assert_eq!(
        poll_now(&pg, "other", &[("cookie", "session=good")])
            .await
            .status,
        200
    );
    assert_eq!(up.hits("/auth/poll"), 3);
}

#[tokio::test]
async fn authorize_failures_are_502_or_504_and_hold_nothing() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&authorize_yaml(up.addr, "/auth/teapot", "")).await;
    assert_eq!(
        poll_now(&pg, "c", &[("cookie", "session=good")])
            .await
            .status,
        502
    );
    let pg = Pollgate::start(&authorize_yaml(up.addr, "/auth/slow", "")).await;
    assert_eq!(
        poll_now(&pg, "c", &[("cookie", "session=good")])
            .await
            .status,
        504
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let pg = Pollgate::start(&authorize_yaml(dead, "/auth/poll", "")).await;
    let reply = poll_now(&pg, "c", &[("cookie", "session=good")]).await;
    assert_eq!(reply.status, 502);
    assert_eq!(
        reply.json()["error"],
        "authorization check failed: the app could not be asked",
        "a poll answer never names an upstream"
    );
}

#[tokio::test]
async fn a_shed_authorization_check_is_503_with_retry_after() {
    let up = Upstream::start("app").await;
    // The first check holds the app's only slot for the 5 s it takes.
    let config = authorize_yaml(up.addr, "/auth/slow", "")
        .replace(
            "connect_timeout: 1s }",
            "connect_timeout: 1s, max_in_flight: 1 }",
        )
        .replace("timeout: 500ms", "timeout: 10s");
    let pg = Pollgate::start(&config).await;
    let first = tokio::spawn({
        let url = pg.url("/api/poll/c?timeout=0");
        async move {
            let req = http::Request::get(url)
                .header("cookie", "session=good")
                .body(http_body_util::Full::<bytes::Bytes>::default())
                .unwrap();
            send(req).await
        }
    });
    up.received("/auth/slow").await;
    let shed = poll_now(&pg, "c", &[("cookie", "session=good")]).await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.headers["retry-after"], "1");
    assert_eq!(
        shed.json()["error"],
        "authorization check failed: the app is busy, retry shortly"
    );
    let _ = first.await;
}

#[tokio::test]
async fn slow_loris_clients_are_cut_off_while_others_are_served() {
    let header_timeout = Duration::from_millis(300);
    let pg = Pollgate::start(&yaml(None, "server: { header_timeout: 300ms }\n")).await;
    let started = tokio::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(pg.public).await.unwrap();
    slow.write_all(b"GET /api/poll/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dripping = async {
        let mut buf = [0u8; 512];
        loop {
            // One header byte every 100 ms: never a complete head. A write
            // refused is the connection closed under it.
            if slow.write_all(b"X").await.is_err() {
                return Ok(());
            }
            tokio::select! {
                r = slow.read(&mut buf) => return match r {
                    Ok(0) | Err(_) => Ok(()),
                    Ok(n) => Err(String::from_utf8_lossy(&buf[..n]).into_owned()),
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    };
    let normal = async { get(&pg.url("/api/poll/y?timeout=0")).await.status };
    // Ten times the deadline: a loaded machine is late, never that late.
    let (cut, status) = tokio::join!(tokio::time::timeout(header_timeout * 10, dripping), normal);
    assert_eq!(status, 200, "another client is served meanwhile");
    assert_eq!(cut, Ok(Ok(())), "closed without an answer");
    assert!(
        started.elapsed() >= header_timeout,
        "not before the deadline"
    );
    assert_eq!(
        pg.metric("pollgate_client_errors_total{kind=\"no_request\"}")
            .await,
        1.0,
        "counted as the client's fault"
    );
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let mut many =
        String::from("GET /api/poll/x?timeout=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let big = format!(
        "GET /api/poll/x?timeout=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    for req in [many, big] {
        let mut s = tokio::net::TcpStream::connect(pg.public).await.unwrap();
        let _ = s.write_all(req.as_bytes()).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let head = String::from_utf8_lossy(&out);
        assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    }
}
