//! Streams under the limits, deadlines and transports: slots, shutdown,
//! slow clients, HTTP/2.

use super::*;

#[tokio::test]
async fn shutdown_ends_every_stream_at_once() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let mut s = Raw::open(&pg, "/api/poll/bye", &[]).await;
    s.until("event: ready").await;
    let metrics = pg.metrics.clone();
    let stopped = tokio::spawn(pg.stop());
    s.read_to_end().await;
    tokio::time::timeout(WAIT, stopped).await.unwrap().unwrap();
    assert_ended_by_shutdown(&metrics);
}

#[tokio::test]
async fn a_stream_holds_a_poll_slot_under_the_limits() {
    let pg = Pollgate::start(&yaml(None, "limits: { max_per_client: 1 }\n")).await;
    let mut s = Raw::open(&pg, "/api/poll/lim", &[]).await;
    s.until("event: ready").await;
    let second = Raw::open(&pg, "/api/poll/lim", &[]).await;
    assert_eq!(second.status, 429);
    assert_eq!(get(&pg.url("/api/poll/other?timeout=0")).await.status, 429);
    assert_eq!(
        pg.metric("pollgate_sse_streams{route=\"/api/poll/\"}")
            .await,
        1.0
    );
    drop(s);
    pg.metric_reaches(
        "pollgate_sse_streams_ended_total{outcome=\"client_gone\"}",
        1.0,
    )
    .await;
    assert_eq!(get(&pg.url("/api/poll/other?timeout=0")).await.status, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_catches_up_from_the_buffer() {
    let pg = Pollgate::start(SLOW_CLIENTS).await;
    // A client that reads the head and then nothing.
    let mut stalled = small_window(&pg, 4096).await;
    stalled
        .write_all(b"GET /api/poll/slow HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut probe = Raw::open(&pg, "/api/poll/slow", &[]).await;
    probe.until("event: ready").await;
    let big = "x".repeat(1 << 20);
    let mut stamps = Vec::new();
    let slow = "pollgate_sse_streams_ended_total{outcome=\"slow_client\"}";
    while pg.metric(slow).await < 1.0 {
        assert!(
            stamps.len() < 200,
            "never cut off after {} MiB",
            stamps.len()
        );
        let m = pg.publish("slow", json!({ "big": big })).await;
        stamps.push(stamp(&m["timestamp"]));
        // The reader that does read keeps up, and is not cut off.
        probe.until(stamps.last().unwrap()).await;
        probe.text.clear();
    }
    assert_eq!(
        pg.metric("pollgate_client_errors_total{kind=\"write_timeout\"}")
            .await,
        1.0
    );
    let mut byte = [0u8; 1];
    let mut drained = Vec::new();
    let cut = async {
        use tokio::io::AsyncReadExt;
        loop {
            match stalled.read(&mut byte).await {
                Ok(0) | Err(_) => break,
                Ok(_) => drained.push(byte[0]),
            }
        }
    };
    tokio::time::timeout(WAIT, cut)
        .await
        .expect("the stalled connection was not closed");
    // Back with its Last-Event-ID: every message after it, from the buffer.
    let mut back = Raw::open(&pg, "/api/poll/slow", &[("last-event-id", &stamps[0])]).await;
    let text = back
        .until(&format!("id: {}\n", stamps.last().unwrap()))
        .await;
    assert_eq!(text.matches("event: message").count(), stamps.len() - 1);
    probe.until("").await;
}

#[tokio::test]
async fn many_streams_share_one_http2_connection_over_tls() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pg = Pollgate::start(&yaml(None, &ca.localhost_tls(dir.path()))).await;
    let stream = ca.connect(pg.public, "localhost", &[b"h2"]).await;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for i in 0..3 {
        let s = h2_stream(&send, &format!("https://localhost/api/poll/h2s{}", i % 2)).await;
        assert_eq!(s.headers["content-type"], "text/event-stream");
        streams.push(s);
    }
    for s in &mut streams {
        s.until("event: ready").await;
    }
    let a = pg.publish("h2s0", json!({"n": 0})).await;
    let b = pg.publish("h2s1", json!({"n": 1})).await;
    for (i, s) in streams.iter_mut().enumerate() {
        let m = if i % 2 == 0 { &a } else { &b };
        s.until(&format!("id: {}\n", stamp(&m["timestamp"]))).await;
    }
    assert_eq!(pg.metric("pollgate_sse_events_total").await, 3.0);
}

async fn h2_stream(send: &hyper::client::conn::http2::SendRequest<Full<Bytes>>, url: &str) -> Raw {
    let req = Request::get(url)
        .header("accept", "text/event-stream")
        .body(Full::<Bytes>::default())
        .unwrap();
    Raw::answered(send.clone().send_request(req).await.unwrap())
}

#[tokio::test]
async fn shutdown_ends_a_stream_that_is_still_catching_up() {
    let pg = Pollgate::start(&yaml(None, "buffer: { max_size: 3000 }\n")).await;
    // A backlog of ~4 MiB, read by a client that takes it slowly: every
    // read of the stream finds more, so only the check before each read
    // can end it.
    let pad = "p".repeat(2000);
    let mut last = String::new();
    for batch in 0..50 {
        let sent = futures_util::future::join_all(
            (0..40).map(|n| pg.publish("backlog", json!({ "n": batch * 40 + n, "pad": pad }))),
        )
        .await;
        last = sent.iter().map(|m| stamp(&m["timestamp"])).max().unwrap();
    }
    let tcp = small_window(&pg, 16 * 1024).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/api/poll/backlog?since=0")
        .header("host", "x")
        .header("accept", "text/event-stream")
        .body(Full::<Bytes>::default())
        .unwrap();
    let mut s = Raw::answered(send.send_request(req).await.unwrap());
    s.until("\"n\":10,").await;
    let metrics = pg.metrics.clone();
    let stopped = tokio::spawn(pg.stop());
    // Paced reading (not synchronisation): a client slower than the backlog.
    let read = async {
        while let Some(frame) = s.body.frame().await {
            let data = frame
                .expect("ended cleanly")
                .into_data()
                .unwrap_or_default();
            s.text.push_str(std::str::from_utf8(&data).unwrap());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("never ended");
    tokio::time::timeout(WAIT, stopped).await.unwrap().unwrap();
    assert!(
        !s.text.contains(&format!("id: {last}\n")),
        "the whole backlog went out before the stream ended ({} bytes)",
        s.text.len()
    );
    assert_ended_by_shutdown(&metrics);
}

#[tokio::test]
async fn a_parked_http2_stream_is_ended_while_its_connection_stays_busy() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}server: {{ write_timeout: 1s }}\nlimits: {{ max_per_client: 2 }}\n",
        ca.localhost_tls(dir.path())
    );
    let pg = Pollgate::start(&yaml(None, &extra)).await;
    let tls = ca.connect(pg.public, "localhost", &[b"h2"]).await;
    // A small window: the parked stream's window fills after 64 KiB.
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut parked = h2_stream(&send, "https://localhost/api/poll/parked").await;
    let mut busy = h2_stream(&send, "https://localhost/api/poll/busy").await;
    parked.until("event: ready").await;
    busy.until("event: ready").await;
    // The parked stream is never read again; the busy one keeps the
    // connection moving, so only the stream's own deadline can end it.
    let chunk = "x".repeat(60_000);
    let slow = "pollgate_sse_streams_ended_total{outcome=\"slow_client\"}";
    let started = tokio::time::Instant::now();
    let mut published = 0;
    while pg.metric(slow).await < 1.0 {
        assert!(started.elapsed() < WAIT, "never ended");
        // 2.4 MB: more than the window, hyper's buffer and the task's queue.
        if published < 40 {
            pg.publish("parked", json!({ "x": chunk })).await;
        }
        let m = pg.publish("busy", json!({ "n": published })).await;
        busy.until(&format!("id: {}\n", stamp(&m["timestamp"])))
            .await;
        published += 1;
    }
    // Its slot is free (a third stream fits under max_per_client: 2), the
    // connection was not closed, and the busy stream still flows.
    pg.metric_reaches("pollgate_sse_streams{route=\"/api/poll/\"}", 1.0)
        .await;
    let mut third = h2_stream(&send, "https://localhost/api/poll/third").await;
    assert_eq!(third.status, 200);
    third.until("event: ready").await;
    let m = pg.publish("busy", json!({ "n": "after" })).await;
    busy.until(&format!("id: {}\n", stamp(&m["timestamp"])))
        .await;
    assert_eq!(
        pg.metric("pollgate_client_errors_total{kind=\"write_timeout\"}")
            .await,
        0.0
    );
}

/// One h2c connection: ten event streams on one channel, nine of which take
/// nothing after their first event (their windows fill and stay full), and
/// parked long polls beside them. The reading stream gets every one of 40
/// events of 60 KB at its own pace; each parked stream ends on its own
/// after the write deadline (`slow_client`), and the connection stays open.
#[tokio::test]
async fn http2_streams_that_take_nothing_never_stop_a_stream_beside_them() {
    let config = format!("{SLOW_CLIENTS}limits: {{ max_per_client: 100 }}\n");
    let pg = Pollgate::start(&config).await;
    let tcp = tokio::net::TcpStream::connect(pg.public).await.unwrap();
    // Windows of 64 KiB per stream: a parked stream's fill at once.
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut parked = Vec::new();
    for _ in 0..9 {
        let mut s = h2_stream(&send, "http://localhost/api/poll/shared").await;
        s.until("event: ready").await;
        parked.push(s);
    }
    // Long polls too, each answered with more than its window, never read.
    let mut polls = Vec::new();
    for _ in 0..3 {
        let req = Request::get("http://localhost/api/poll/shared?max=10&timeout=30")
            .body(Full::<Bytes>::default())
            .unwrap();
        polls.push(tokio::spawn(send.clone().send_request(req)));
    }
    let mut reader = h2_stream(&send, "http://localhost/api/poll/shared").await;
    reader.until("event: ready").await;
    pg.held(3).await;
    pg.metric_reaches("pollgate_sse_streams{route=\"/api/poll/\"}", 10.0)
        .await;
    let chunk = "x".repeat(60_000);
    for n in 0..40 {
        let m = pg.publish("shared", json!({ "n": n, "x": chunk })).await;
        // Read at the reader's own pace: every event, as it comes.
        reader
            .until(&format!("id: {}\n", stamp(&m["timestamp"])))
            .await;
    }
    assert_eq!(reader.text.matches("event: message").count(), 40);
    // The parked streams end on their own deadline, not the connection's.
    pg.metric_reaches(
        "pollgate_sse_streams_ended_total{outcome=\"slow_client\"}",
        9.0,
    )
    .await;
    let m = pg.publish("shared", json!({ "n": "after" })).await;
    reader
        .until(&format!("id: {}\n", stamp(&m["timestamp"])))
        .await;
    assert_eq!(
        pg.metric("pollgate_client_errors_total{kind=\"write_timeout\"}")
            .await,
        0.0,
        "the connection was not closed"
    );
    for p in polls {
        let answered = p.await.unwrap().unwrap();
        assert_eq!(answered.status(), 200);
    }
    drop(parked);
}

/// After `stop()`, from the metrics it left: one stream, ended by shutdown.
fn assert_ended_by_shutdown(metrics: &pollgate::metrics::Metrics) {
    let text = metrics.render(pollgate::metrics::AtScrape {
        channels: 0,
        buffered: 0,
        broker_up: true,
        log_lines_dropped: 0,
        connections: [("public", 0), ("webhook", 0)],
    });
    assert!(
        text.contains("pollgate_sse_streams_ended_total{outcome=\"shutdown\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn an_http2_client_that_stops_reading_its_socket_is_counted_as_slow() {
    let pg = Pollgate::start(SLOW_CLIENTS).await;
    let tcp = small_window(&pg, 4096).await;
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let io = Freezable {
        io: tcp,
        frozen: frozen.clone(),
    };
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut s = h2_stream(&send, "http://localhost/api/poll/frozen").await;
    s.until("event: ready").await;
    // From now on the client reads nothing from its socket (its windows
    // stay open: only the connection's write deadline can find it).
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    // 16 MiB: more than the socket buffers and HTTP/2's windows take.
    let big = "x".repeat(1 << 20);
    for _ in 0..16 {
        pg.publish("frozen", json!({ "big": big })).await;
    }
    pg.metric_reaches(
        "pollgate_sse_streams_ended_total{outcome=\"slow_client\"}",
        1.0,
    )
    .await;
    // The stream is given up on as the client's fault, not counted as a
    // client that left.
    assert_eq!(
        pg.metric("pollgate_sse_streams_ended_total{outcome=\"client_gone\"}")
            .await,
        0.0
    );
}

/// An I/O whose reads stop for good once `frozen` is set (a client whose
/// process stopped reading its socket); writes go on.
struct Freezable<T> {
    io: T,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Freezable<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Freezable<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Big publishes and a short write deadline: what the slow-client tests run.
const SLOW_CLIENTS: &str = "listen: \"127.0.0.1:0\"\nwebhook: { listen: \"127.0.0.1:0\", max_body: 2MiB }\nroutes:\n  - { prefix: /api/poll/, poll: {} }\nserver: { write_timeout: 1s }\n";

/// A connection to pollgate's public port with a receive buffer of
/// `bytes`: when its client stops reading, pollgate's writes stall soon.
async fn small_window(pg: &Pollgate, bytes: u32) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    socket.connect(pg.public).await.unwrap()
}
