//! Runs examples/client/pollgate-client.test.js (node --test) against a real
//! pollgate. Needs Node 18+; .ci/run installs it and sets
//! POLLGATE_REQUIRE_NODE=1 so this never skips there.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_passes_its_tests() {
    if !tools::program(
        "node",
        "--version",
        "POLLGATE_REQUIRE_NODE",
        "the JavaScript client",
    ) {
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
    node_test("examples/client", "pollgate-client.test.js", &env, 9).await;
}

/// `npm` in `dir`; panics with its output when it fails.
fn npm(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "npm {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_client_declarations_accept_typed_use_and_refuse_mistakes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/client");
    let tsc = dir.join("node_modules/typescript/bin/tsc");
    assert!(
        tsc.exists(),
        "run `npm ci` in examples/client first (.ci/run does)"
    );
    let run = |project: &str| {
        std::process::Command::new("node")
            .arg(&tsc)
            .args(["-p", project])
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let good = run("tsconfig.json");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    let bad = run("tsconfig.bad.json");
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "the mistakes were accepted");
    assert!(
        text.contains("'channel' is missing") && text.contains("\"messages\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packed_client_installs_into_an_empty_project_and_receives() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/client");
    let work = tempfile::tempdir().unwrap();
    let packed = npm(
        &dir,
        &[
            "pack",
            "--pack-destination",
            &work.path().display().to_string(),
        ],
    );
    let tarball = work.path().join(packed.trim().lines().last().unwrap());
    assert!(tarball.exists(), "{packed}");
    let project = work.path().join("consumer");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("package.json"),
        r#"{"name":"consumer","version":"1.0.0","private":true}"#,
    )
    .unwrap();
    npm(
        &project,
        &[
            "install",
            "--no-audit",
            "--no-fund",
            "--offline",
            &tarball.display().to_string(),
        ],
    );
    for file in ["use.cjs", "use.mjs", "receive.cjs"] {
        std::fs::copy(dir.join("consumer").join(file), project.join(file)).unwrap();
    }
    // Only what the package lists was packed.
    let installed = project.join("node_modules/pollgate-client");
    assert!(installed.join("pollgate-client.d.mts").exists());
    assert!(!installed.join("pollgate-client.test.js").exists());
    let pg = Pollgate::start(&yaml(None, "")).await;
    for (script, how) in [("use.cjs", "cjs"), ("use.mjs", "esm")] {
        let out = tokio::process::Command::new("node")
            .arg(script)
            .current_dir(&project)
            .env("POLLGATE_URL", format!("http://{}", pg.public))
            .env("POLLGATE_WEBHOOK", format!("http://{}", pg.webhook))
            .output()
            .await
            .unwrap();
        assert_ok(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("{how} received hello {how}")),
            "{stdout}"
        );
    }
}
