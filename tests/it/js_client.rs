//! Runs examples/client/pollgate-client.test.js (node --test) against a real
//! pollgate. Needs Node 18+; .ci/run installs it and sets
//! POLLGATE_REQUIRE_NODE=1 so this never skips there.

use crate::support::*;

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
    // The Node EventSource the streaming tests use (tests/sse, `npm ci`).
    let eventsource = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sse/node_modules/eventsource/dist/index.cjs");
    assert!(
        eventsource.exists(),
        "run `npm ci` in tests/sse first (.ci/run does)"
    );
    let pg = Pollgate::start(
        "listen: \"127.0.0.1:0\"\nwebhook: { listen: \"127.0.0.1:0\" }\nroutes:\n  \
         - { prefix: /api/poll/, poll: {} }\n  - { prefix: /plain/poll/, poll: { sse: false } }\n",
    )
    .await;
    let env = [
        ("POLLGATE_URL", format!("http://{}", pg.public)),
        ("POLLGATE_WEBHOOK", format!("http://{}", pg.webhook)),
        ("POLLGATE_EVENTSOURCE", eventsource.display().to_string()),
    ];
    node_test("examples/client", "pollgate-client.test.js", &env, 8).await;
}
