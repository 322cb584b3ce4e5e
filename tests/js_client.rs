//! Runs examples/client/pollgate-client.test.js (node --test) against a real
//! pollgate. Needs Node 18+; .ci/run installs it and sets
//! POLLGATE_REQUIRE_NODE=1 so this never skips there.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_passes_its_tests() {
    let node = std::process::Command::new("node").arg("--version").output();
    if node.is_err() {
        assert!(
            std::env::var("POLLGATE_REQUIRE_NODE").is_err(),
            "node is not installed but POLLGATE_REQUIRE_NODE is set"
        );
        eprintln!("\n*** SKIPPED: node not found; the JavaScript client was NOT tested ***\n");
        return;
    }
    let pg = Pollgate::start(&yaml(None, "")).await;
    let out = tokio::process::Command::new("node")
        .args(["--test", "examples/client/pollgate-client.test.js"])
        .env("POLLGATE_URL", format!("http://{}", pg.public))
        .env("POLLGATE_WEBHOOK", format!("http://{}", pg.webhook))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# pass 5"), "{stdout}");
}
