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
async fn the_status_page_updates_itself_after_a_publish() {
    if !browser_ready() {
        return;
    }
    let pg = Pollgate::start(&yaml(None, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let node_path = std::fs::canonicalize("examples/chat/node_modules").unwrap();
    let env = [
        ("NODE_PATH", node_path.display().to_string()),
        ("POLLGATE_WEBHOOK", format!("http://{}", pg.webhook)),
        ("SCREENSHOT_DIR", dir.path().display().to_string()),
    ];
    node_test(".", "tests/browser/status.test.js", &env, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_pages_chat_through_pollgate_across_a_restart() {
    if !browser_ready() {
        return;
    }
    let pg_bin = PathBuf::from(env!("CARGO_BIN_EXE_pollgate"));
    // `cargo test` builds the examples beside the binaries.
    let app_bin = pg_bin.parent().unwrap().join("examples/legacy_app");
    assert!(app_bin.exists(), "{} not built", app_bin.display());
    let (pg_port, hook_port, app_port) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{pg_port}\"\nwebhook: {{ listen: \"127.0.0.1:{hook_port}\" }}\nupstreams:\n  app: {{ url: \"http://127.0.0.1:{app_port}\" }}\nroutes:\n  - {{ prefix: /api/poll/, poll: {{}} }}\n  - {{ prefix: /, upstream: app }}\n"
        ),
    )
    .unwrap();
    let env = [
        ("PG_BIN", pg_bin.display().to_string()),
        ("APP_BIN", app_bin.display().to_string()),
        ("PG_CONFIG", config.display().to_string()),
        ("PG_PORT", pg_port.to_string()),
        ("HOOK_PORT", hook_port.to_string()),
        ("APP_PORT", app_port.to_string()),
        ("SCREENSHOT_DIR", dir.path().display().to_string()),
    ];
    node_test("examples/chat", "browser.test.js", &env, 1).await;
    assert!(
        dir.path().join("chat.png").exists(),
        "the page was rendered"
    );
}
