//! The forwarding proxy, end to end: a real upstream behind real pollgate
//! listeners.

use crate::support::*;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_method_path_and_query_reaches_the_upstream() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(pg.url("/api/items/7?sort=desc&q=a%20b"))
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let reply = send(req).await;
        assert_eq!(reply.status, 200, "{method}");
        let echo = reply.json();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["path"], "/api/items/7");
        assert_eq!(echo["query"], "sort=desc&q=a%20b");
        assert_eq!(echo["body_len"], 5);
    }
    let head = send(Request::head(pg.url("/x")).body(Full::default()).unwrap()).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn upstream_statuses_and_headers_pass_through() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    let reply = get(&pg.url("/teapot")).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert!(
        !reply.headers.contains_key("x-upstream-conn"),
        "named in Connection: hop-by-hop"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_forwarded_headers_added() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    let req = Request::get(pg.url("/h"))
        .header("host", "app.example:8080")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9v")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-custom", "kept")
        .body(Full::default())
        .unwrap();
    let echo = send(req).await.json();
    let h = &echo["headers"];
    for gone in ["x-private", "keep-alive", "te", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} must not be forwarded: {h}");
    }
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["host"], "app.example:8080", "Host passes through");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "app.example:8080");
}

#[tokio::test]
async fn longest_prefix_chooses_the_route() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let config = format!(
        "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\nupstreams:\n  a: {{ url: \"http://{}\" }}\n  b: {{ url: \"http://{}\" }}\nroutes:\n  - {{ prefix: /, upstream: a }}\n  - {{ prefix: /api/, upstream: b }}\n  - {{ prefix: /api/poll/, poll: {{}} }}\n  - {{ prefix: /api/v2/, upstream: a, methods: [POST] }}\n",
        a.addr, b.addr
    );
    let pg = Pollgate::start(&config).await;
    assert_eq!(get(&pg.url("/index.html")).await.json()["upstream"], "a");
    assert_eq!(get(&pg.url("/api/users")).await.json()["upstream"], "b");
    assert_eq!(
        get(&pg.url("/api/v2/x")).await.json()["upstream"],
        "b",
        "GET falls through to /api/"
    );
    let (_, body) = post_json(&pg.url("/api/v2/x"), "{}").await;
    assert!(body.contains("\"upstream\":\"a\""), "{body}");
    let poll = get(&pg.url("/api/poll/c?timeout=0")).await.json();
    assert_eq!(poll["status"], "timeout");
}

#[tokio::test]
async fn no_route_is_a_json_404() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let reply = get(&pg.url("/nothing/here")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert!(reply.json()["error"].as_str().unwrap().contains("no route"));
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_within_connect_timeout() {
    // Bind then drop: a port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let pg = Pollgate::start(&yaml(Some(dead), "")).await;
    let started = tokio::time::Instant::now();
    let reply = get(&pg.url("/api/x")).await;
    assert_eq!(reply.status, 502);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{}",
        reply.body
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_after_the_route_timeout() {
    let up = Upstream::start("app").await;
    let config = format!(
        "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\nupstreams:\n  app: {{ url: \"http://{}\" }}\nroutes:\n  - {{ prefix: /, upstream: app, timeout: 200ms }}\n",
        up.addr
    );
    let pg = Pollgate::start(&config).await;
    let reply = get(&pg.url("/slow?ms=3000")).await;
    assert_eq!(reply.status, 504);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("did not answer within 200ms"));
    assert_eq!(get(&pg.url("/slow?ms=10")).await.status, 200);
}

/// Opens a WebSocket through pollgate to the test upstream's echo; returns
/// the stream and the answer's head, lowercased.
async fn websocket(pg: &Pollgate) -> (tokio::net::TcpStream, String) {
    let mut stream = tokio::net::TcpStream::connect(pg.public).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    (stream, head)
}

#[tokio::test]
async fn a_tunnel_counts_as_a_connection_not_as_a_request_in_flight() {
    let up = Upstream::start("app").await;
    let config = yaml(Some(up.addr), "server: { max_connections: 2 }\n").replace(
        "connect_timeout: 1s }",
        "connect_timeout: 1s, max_in_flight: 1 }",
    );
    let pg = Pollgate::start(&config).await;
    let (mut tunnel, _) = websocket(&pg).await;
    // The tunnel keeps its connection slot after its connection's serving
    // ended: with one more connection the cap (2) is full, and a third waits.
    let second = tokio::net::TcpStream::connect(pg.public).await.unwrap();
    let third = tokio::net::TcpStream::connect(pg.public).await.unwrap();
    pg.metric_reaches(
        "pollgate_connection_cap_reached_total{listener=\"public\"}",
        1.0,
    )
    .await;
    drop((second, third));
    // The app's only request slot is free again: the next request is served.
    assert_eq!(get(&pg.url("/after")).await.status, 200);
    tunnel.write_all(b"still there").await.unwrap();
    let mut echo = [0u8; 11];
    tunnel.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still there");
}

#[tokio::test]
async fn an_upgrade_is_spliced_both_ways() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    let (mut stream, head) = websocket(&pg).await;
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"ping"[..], b"second frame", b"third"] {
        stream.write_all(msg).await.unwrap();
        let mut echo = vec![0u8; msg.len()];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, msg);
    }
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let up = Upstream::start("app").await;
    let pg = Pollgate::start(&yaml(Some(up.addr), "")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build::<_, Full<Bytes>>(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client
        .request(
            Request::get(pg.url("/api/h2?x=1"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/api/h2");
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "upstream is spoken to over HTTP/1.1"
    );
    assert_eq!(
        echo["headers"]["host"],
        pg.public.to_string(),
        ":authority becomes Host"
    );
}
