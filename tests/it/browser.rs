//! The chat example end to end in headless Chromium (examples/chat). Needs
//! Debian's chromium and `npm ci` in examples/chat; .ci/run provides both and
//! sets POLLGATE_REQUIRE_BROWSER=1, so CI never skips this.

use std::path::PathBuf;

use crate::support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Chromium and playwright-core are there, or the test must be skipped
/// (loudly, and never in CI).
fn browser_ready() -> bool {
    let ready = std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new("examples/chat/node_modules/playwright-core").exists();
    if !ready {
        assert!(
            std::env::var("POLLGATE_REQUIRE_BROWSER").is_err(),
            "POLLGATE_REQUIRE_BROWSER is set but chromium or playwright-core is missing"
        );
        eprintln!("\n*** SKIPPED: no /usr/bin/chromium or examples/chat/node_modules: the browser tests did NOT run ***\n");
    }
    ready
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_charts_the_traffic_and_sorts_and_filters_channels() {
    if !browser_ready() {
        return;
    }
    let pg = Pollgate::start(&yaml(None, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let node_path = std::fs::canonicalize("examples/chat/node_modules").unwrap();
    let env = [
        ("NODE_PATH", node_path.display().to_string()),
        ("POLLGATE_WEBHOOK", format!("http://{}", pg.webhook)),
        ("POLLGATE_PUBLIC", format!("http://{}", pg.public)),
        ("SCREENSHOT_DIR", dir.path().display().to_string()),
    ];
    node_test(".", "tests/browser/status.test.js", &env, 1).await;
    assert!(
        dir.path().join("status.png").exists(),
        "the page was rendered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_pages_chat_through_pollgate_across_a_restart() {
    if !browser_ready() {
        return;
    }
    let mut chat = Chat::new("");
    let shots = chat.dir.path().display().to_string();
    chat.env.push(("SCREENSHOT_DIR", shots));
    node_test("examples/chat", "browser.test.js", &chat.env, 1).await;
    assert!(
        chat.dir.path().join("chat.png").exists(),
        "the page was rendered"
    );
}

/// The deployment recipe (deploy/nginx/nginx.conf) in front of one pollgate
/// on `pg_port`, listening on `port`, but with the poll location buffered:
/// `proxy_buffering on`, `X-Accel-Buffering: no` ignored, and gzip for
/// event streams. (Measured: nginx with `proxy_buffering on` alone still
/// passes each event on as it arrives; its gzip filter is what holds a
/// stream back, a common misconfiguration.)
fn buffering_nginx(dir: &std::path::Path, port: u16, pg_port: u16) -> Nginx {
    let recipe = std::fs::read_to_string("deploy/nginx/nginx.conf").unwrap();
    let mut conf = String::new();
    for line in recipe.lines() {
        let t = line.trim_start();
        if t.starts_with("server 127.0.0.1:8080") {
            conf.push_str(&format!("        server 127.0.0.1:{pg_port};\n"));
        } else if t.starts_with("server 127.0.0.1:8090") {
            continue;
        } else if t.starts_with("listen 127.0.0.1:8000") {
            conf.push_str(&format!("        listen 127.0.0.1:{port};\n"));
        } else if t.starts_with("proxy_buffering off") {
            conf.push_str("            proxy_buffering on;\n            proxy_ignore_headers X-Accel-Buffering;\n            gzip on;\n            gzip_types text/event-stream application/json;\n            gzip_min_length 0;\n");
        } else if t.starts_with("worker_processes") {
            conf.push_str("worker_processes 1;\n");
        } else {
            conf.push_str(line);
            conf.push('\n');
        }
    }
    assert!(
        conf.contains("proxy_buffering on"),
        "the recipe changed: {conf}"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = tokio::process::Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off; user root;"])
        .kill_on_drop(true)
        .spawn()
        .expect("nginx");
    Nginx(child)
}

/// An nginx master process, stopped on drop with SIGTERM, which it passes
/// to its worker (a SIGKILL would leave the worker behind, holding the
/// test runner's output open).
struct Nginx(tokio::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(pid) = self.0.id() else { return };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        for _ in 0..100 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_streams_and_falls_back_to_polling_behind_a_buffering_proxy() {
    if !browser_ready() {
        return;
    }
    if !tools::program(
        "nginx",
        "-v",
        "POLLGATE_REQUIRE_NGINX",
        "the buffering-proxy fallback",
    ) {
        return;
    }
    let mut chat = Chat::new("poll: { sse_heartbeat: 1s }\n");
    let nginx_port = free_port();
    let nginx_dir = tempfile::tempdir().unwrap();
    let _nginx = buffering_nginx(nginx_dir.path(), nginx_port, chat.pg_port);
    chat.env.push(("NGINX_PORT", nginx_port.to_string()));
    node_test("examples/chat", "sse.test.js", &chat.env, 2).await;
}

/// The chat example as the browser tests run it: pollgate and the legacy
/// app (built by `cargo test` beside the binaries) on free ports, and a
/// pollgate config (plus `extra` YAML), handed to the node test as its
/// environment.
struct Chat {
    dir: tempfile::TempDir,
    pg_port: u16,
    env: Vec<(&'static str, String)>,
}

impl Chat {
    fn new(extra: &str) -> Chat {
        let pg_bin = PathBuf::from(env!("CARGO_BIN_EXE_pollgate"));
        let app_bin = pg_bin.parent().unwrap().join("examples/legacy_app");
        assert!(app_bin.exists(), "{} not built", app_bin.display());
        let (pg_port, hook_port, app_port) = (free_port(), free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pollgate.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{pg_port}\"\nwebhook: {{ listen: \"127.0.0.1:{hook_port}\" }}\nupstreams:\n  app: {{ url: \"http://127.0.0.1:{app_port}\" }}\nroutes:\n  - {{ prefix: /api/poll/, poll: {{}} }}\n  - {{ prefix: /, upstream: app }}\n{extra}"
            ),
        )
        .unwrap();
        let env = vec![
            ("PG_BIN", pg_bin.display().to_string()),
            ("APP_BIN", app_bin.display().to_string()),
            ("PG_CONFIG", config.display().to_string()),
            ("PG_PORT", pg_port.to_string()),
            ("HOOK_PORT", hook_port.to_string()),
            ("APP_PORT", app_port.to_string()),
        ];
        Chat { dir, pg_port, env }
    }
}
