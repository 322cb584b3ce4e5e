//! The chat example end to end in headless Chromium (examples/chat). Needs
//! Debian's chromium and `npm ci` in examples/chat; .ci/run provides both and
//! sets POLLGATE_REQUIRE_BROWSER=1, so CI never skips this.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

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
    let out = tokio::process::Command::new("node")
        .args(["--test", "tests/browser/status.test.js"])
        .env("NODE_PATH", node_path)
        .env("POLLGATE_WEBHOOK", format!("http://{}", pg.webhook))
        .env("SCREENSHOT_DIR", dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# pass 1"), "{stdout}");
}

#[test]
fn two_browser_pages_chat_through_pollgate_across_a_restart() {
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
    let out = Command::new("node")
        .args(["--test", "browser.test.js"])
        .current_dir("examples/chat")
        .env("PG_BIN", &pg_bin)
        .env("APP_BIN", &app_bin)
        .env("PG_CONFIG", &config)
        .env("PG_PORT", pg_port.to_string())
        .env("HOOK_PORT", hook_port.to_string())
        .env("APP_PORT", app_port.to_string())
        .env("SCREENSHOT_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# pass 1"), "{stdout}");
    assert!(
        dir.path().join("chat.png").exists(),
        "the page was rendered"
    );
}
