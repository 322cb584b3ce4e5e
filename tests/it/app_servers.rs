//! Apps that close their connections: pollgate in front of an app that
//! closes after every answer without saying so, and in front of real app
//! servers no one here wrote (gunicorn's sync and threaded workers,
//! Werkzeug's development server, Node's http server with a short
//! keep-alive, Python's http.server on HTTP/1.0).
//!
//! The contract (README, "Upstream connections"): a bodiless GET, HEAD or
//! OPTIONS is never answered 502 because the app closed a kept-alive
//! connection; a request with a body reaches the app at most once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What reached an app: one `(method, id)` per request, in order.
#[derive(Default, Clone)]
struct Reached(Arc<Mutex<Vec<(String, String)>>>);

/// An app that answers `HTTP/1.1 200` with a length and no `Connection:
/// close`, then closes the socket `close_after` later (zero: once other
/// tasks have run): a worker that exits after each request.
async fn closing_app(close_after: Duration) -> (SocketAddr, Reached) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reached = Reached::default();
    let log = reached.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(sock);
                let (mut method, mut id, mut length) = (String::new(), "-".to_owned(), 0usize);
                let mut line = String::new();
                loop {
                    line.clear();
                    match conn.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if method.is_empty() {
                        method = line.split(' ').next().unwrap_or_default().to_owned();
                    } else if let Some((name, value)) = line.split_once(':') {
                        match name.to_ascii_lowercase().as_str() {
                            "x-req" => id = value.trim().to_owned(),
                            "content-length" => length = value.trim().parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
                let mut body = vec![0; length];
                if conn.read_exact(&mut body).await.is_err() {
                    return;
                }
                log.0.lock().push((method, id));
                let _ = conn
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Closed a moment after the answer (a worker exiting), and
                // nothing said about it.
                if close_after.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(close_after).await;
                }
            });
        }
    });
    (addr, reached)
}

/// The outcome of a run of requests through pollgate.
#[derive(Debug, Default)]
struct Run {
    /// Status counts, by method.
    statuses: HashMap<(Method, u16), usize>,
    /// Requests that got no answer at all (the client connection failed).
    unanswered: usize,
    /// The ids of requests with a body that were not answered 200.
    failed_posts: Vec<String>,
}

impl Run {
    fn count(&self, method: &Method, status: u16) -> usize {
        self.statuses
            .get(&(method.clone(), status))
            .copied()
            .unwrap_or(0)
    }

    fn sent(&self, method: &Method) -> usize {
        self.statuses
            .iter()
            .filter(|((m, _), _)| m == method)
            .map(|(_, n)| n)
            .sum()
    }
}

/// `clients` keep-alive connections to pollgate, each sending `each`
/// requests in turn (methods in rotation, ids `c-i`), pausing `pause`
/// between two.
async fn drive(
    pg: SocketAddr,
    clients: usize,
    each: usize,
    methods: &[Method],
    pause: Duration,
) -> Run {
    let run = Arc::new(Mutex::new(Run::default()));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (run, methods) = (run.clone(), methods.to_vec());
        tasks.push(tokio::spawn(async move {
            let io = TokioIo::new(TcpStream::connect(pg).await.unwrap());
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            for i in 0..each {
                let method = methods[(c + i) % methods.len()].clone();
                let body = if method == Method::POST {
                    Bytes::from_static(b"{\"n\":1}")
                } else {
                    Bytes::new()
                };
                let req = Request::builder()
                    .method(method.clone())
                    .uri("/app/item")
                    .header("host", "pollgate")
                    .header("x-req", format!("{c}-{i}"))
                    .body(Full::new(body))
                    .unwrap();
                let answered = async {
                    send.ready().await.ok()?;
                    let resp = send.send_request(req).await.ok()?;
                    let status = resp.status().as_u16();
                    resp.into_body().collect().await.ok()?;
                    Some(status)
                };
                match answered.await {
                    Some(status) => {
                        let mut run = run.lock();
                        if method == Method::POST && status != 200 {
                            run.failed_posts.push(format!("{c}-{i}"));
                        }
                        *run.statuses.entry((method, status)).or_default() += 1;
                    }
                    None => {
                        run.lock().unanswered += 1;
                        return;
                    }
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(run).unwrap().into_inner()
}

fn config(app: SocketAddr) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nwebhook: {{ listen: \"127.0.0.1:0\" }}\n\
         upstreams:\n  app: {{ url: \"http://{app}\", connect_timeout: 2s }}\n\
         routes:\n  - {{ prefix: /, upstream: app, timeout: 10s }}\n"
    )
}

/// Asserts the contract on a run: every GET, HEAD and OPTIONS answered
/// 200; every POST that reached the app reached it once; at most 1 in 100
/// POSTs lost to the race of a close with a request going out.
fn assert_contract(run: &Run, reached: &[(String, String)], what: &str) {
    assert_eq!(run.unanswered, 0, "{what}: {run:?}");
    for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
        assert_eq!(
            run.count(&m, 200),
            run.sent(&m),
            "{what}: every {m} answered: {run:?}"
        );
    }
    let mut seen = HashMap::<&str, usize>::new();
    for (_, id) in reached.iter().filter(|(m, _)| m == "POST") {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: POSTs that reached the app twice: {twice:?}"
    );
    // A POST lost to the race of a close (the app never read it) fails;
    // one the app got is never reported failed.
    let got_and_failed: Vec<_> = run
        .failed_posts
        .iter()
        .filter(|id| seen.contains_key(id.as_str()))
        .collect();
    assert!(
        got_and_failed.is_empty(),
        "{what}: POSTs the app got, answered as failed: {got_and_failed:?}"
    );
}

/// At most 1 in 100 requests with a body lost to the race of an app's
/// close with the request going out.
fn assert_few_posts_lost(run: &Run, what: &str) {
    let posts = run.sent(&Method::POST);
    let lost = posts - run.count(&Method::POST, 200);
    assert!(
        lost * 100 <= posts,
        "{what}: {lost} of {posts} POSTs lost: {run:?}"
    );
}

/// How soon after its answer the test app closes: at once, and as a
/// worker process exiting would.
const CLOSES: [Duration; 2] = [Duration::ZERO, Duration::from_millis(5)];

/// An app that closes after every answer: no bodiless request is answered
/// 502, at 16 and at 64 clients (a replay goes on a new connection, not on
/// another pooled one as old as the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_closes_after_every_answer_gets_no_502() {
    for close_after in CLOSES {
        let (app, reached) = closing_app(close_after).await;
        let pg = Pollgate::start(&config(app)).await;
        let safe = [Method::GET, Method::HEAD, Method::OPTIONS];
        for (clients, each) in [(16, 135), (64, 40)] {
            let run = drive(pg.public, clients, each, &safe, Duration::ZERO).await;
            let what = format!("{clients} clients, closes after {close_after:?}");
            assert_contract(&run, &reached.0.lock(), &what);
        }
        assert_no_upstream_error(&pg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_an_app_that_closes_after_every_answer_reaches_it_at_most_once() {
    for close_after in CLOSES {
        let (app, reached) = closing_app(close_after).await;
        let pg = Pollgate::start(&config(app)).await;
        let run = drive(
            pg.public,
            16,
            40,
            &[Method::POST, Method::GET],
            Duration::ZERO,
        )
        .await;
        let what = format!("closes after {close_after:?}");
        assert_contract(&run, &reached.0.lock(), &what);
        assert_few_posts_lost(&run, &what);
    }
}

async fn assert_no_upstream_error(pg: &Pollgate) {
    let metrics = pg.metrics_text().await;
    assert!(
        !metrics.contains("pollgate_upstream_errors_total{"),
        "no upstream error: {metrics}"
    );
}

/// A real app server, started as its own process, killed on drop.
struct AppServer {
    addr: SocketAddr,
    log: PathBuf,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl AppServer {
    async fn start(program: &Path, args: &[&str]) -> AppServer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.log");
        // A free port: the app binds it itself.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("PORT", &port.to_string()))
            .collect();
        let child = tokio::process::Command::new(program)
            .args(&args)
            .current_dir(apps_dir())
            .env("APP_LOG", &log)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{program:?}: {e}"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let up = async {
            while TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), up)
            .await
            .unwrap_or_else(|_| panic!("{program:?} {args:?} never listened"));
        AppServer {
            addr,
            log,
            child,
            _dir: dir,
        }
    }

    fn reached(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(m, id)| (m.to_owned(), id.to_owned()))
            .collect()
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

/// The pinned Python servers (gunicorn, Flask with Werkzeug), installed
/// once per test process; `None` (skipped loudly, failing in CI) when
/// they cannot be.
fn python() -> Option<PathBuf> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match READY.get_or_init(|| tools::venv(&apps_dir())) {
        Ok(bin) => Some(bin.clone()),
        Err(why) => {
            tools::skip(
                "POLLGATE_REQUIRE_APPS",
                &format!("the app servers could not be installed ({why})"),
                "pollgate in front of gunicorn and Werkzeug",
            );
            None
        }
    }
}

/// Runs the mix through pollgate in front of `app` and checks the contract.
/// With pauses as long as the app's keep-alive, some requests meet its
/// close on purpose: a request with a body that does is lost (as behind
/// nginx), never sent twice nor reported failed once the app got it.
async fn in_front_of(app: AppServer, pause: Duration, what: &str) {
    let pg = Pollgate::start(&config(app.addr)).await;
    let methods = [Method::GET, Method::POST, Method::HEAD, Method::OPTIONS];
    let run = drive(pg.public, 8, 12, &methods, pause).await;
    assert_contract(&run, &app.reached(), what);
    if pause.is_zero() {
        assert_few_posts_lost(&run, what);
    }
    assert!(run.count(&Method::GET, 200) > 0, "{what}: {run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gunicorn_sync_workers_that_close_every_connection() {
    let Some(bin) = python() else { return };
    let app = AppServer::start(
        &bin.join("gunicorn"),
        &[
            "--workers",
            "2",
            "--worker-class",
            "sync",
            "-b",
            "127.0.0.1:PORT",
            "wsgi:app",
        ],
    )
    .await;
    in_front_of(app, Duration::ZERO, "gunicorn sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gunicorn_threaded_workers_with_a_one_second_keep_alive() {
    let Some(bin) = python() else { return };
    let app = AppServer::start(
        &bin.join("gunicorn"),
        &[
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--keep-alive",
            "1",
            "-b",
            "127.0.0.1:PORT",
            "wsgi:app",
        ],
    )
    .await;
    // Pauses around the keep-alive: some requests meet its close.
    in_front_of(app, Duration::from_millis(990), "gunicorn gthread").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn werkzeugs_development_server() {
    let Some(bin) = python() else { return };
    let app = AppServer::start(&bin.join("python"), &["wsgi.py", "PORT"]).await;
    in_front_of(app, Duration::ZERO, "werkzeug").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythons_http_server_on_http_1_0() {
    let Some(bin) = python() else { return };
    let app = AppServer::start(&bin.join("python"), &["legacy.py", "PORT"]).await;
    in_front_of(app, Duration::ZERO, "http.server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_http_server_with_a_300_ms_keep_alive() {
    if !tools::program(
        "node",
        "--version",
        "POLLGATE_REQUIRE_NODE",
        "pollgate in front of Node's http server",
    ) {
        return;
    }
    let app = AppServer::start(Path::new("node"), &["app.js", "PORT"]).await;
    // Pauses around the keep-alive: some requests meet its close.
    in_front_of(app, Duration::from_millis(300), "node").await;
}
