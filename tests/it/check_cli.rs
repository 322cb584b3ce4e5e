//! The `pollgate` binary: `check`, refusing a bad config, flags.

use crate::support::{assert_ok, check, pollgate_bin as pollgate};

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("pollgate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_shipped_config_and_summarizes_routes() {
    let out = pollgate()
        .args(["check", "--config", "config/pollgate.yaml"])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/api/poll/") && text.contains("long poll"),
        "{text}"
    );
    assert!(text.contains("proxy -> app"), "{text}");
}

#[test]
fn check_lists_every_error_with_its_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "listen: here\nroutes:\n  - { prefix: /api/, upstream: ghost }\n  - { prefix: /x/, upstream: app, timeout: 5 }\n");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // A value that does not parse stops nothing: the other errors of the
    // file come in the same run, each with its line.
    assert!(err.contains("4 errors"), "{err}");
    assert!(err.contains("listen (line 1)"), "{err}");
    assert!(err.contains("routes[0].upstream (line 3)"), "{err}");
    assert!(err.contains("routes[1].upstream (line 4)"), "{err}");
    assert!(
        err.contains("routes[1].timeout (line 4)") && err.contains("add a unit"),
        "{err}"
    );

    let path = write(
        &dir,
        "listen: here\nroutes:\n  - { prefix: /api/, upstream: ghost }\n",
    );
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 errors"), "{err}");
    assert!(err.contains("listen (line 1)"), "{err}");
    assert!(
        err.contains("routes[0].upstream (line 3): unknown upstream \"ghost\""),
        "{err}"
    );
}

#[test]
fn an_unknown_key_beside_a_value_that_does_not_parse_is_reported_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "listen: \"127.0.0.1:0\"\nroutes:\n  - { prefix: /p/, poll: {} }\npoll:\n  default_timout: 5s\n  max_timeout: 30\nbuffer: { max_size: lots }\n",
    );
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 errors"), "{err}");
    assert!(
        err.contains("poll.default_timout (line 5): unknown field `default_timout`"),
        "{err}"
    );
    assert!(err.contains("poll.max_timeout (line 6)"), "{err}");
    assert!(err.contains("buffer.max_size (line 7)"), "{err}");
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "routes: []\n");
    let out = pollgate().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one route"));
    let out = pollgate().env("POLLGATE_CONFIG", &path).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "POLLGATE_CONFIG names the file too"
    );
}

#[test]
fn help_and_version() {
    let out = pollgate().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config") && help.contains("check") && help.contains("--log-format"),
        "{help}"
    );
    let out = pollgate().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_bash_completion_loads_in_bash_and_completes_subcommands_and_shells() {
    let out = pollgate().args(["completions", "bash"]).output().unwrap();
    assert_ok(&out);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pollgate.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // What bash does on `pollgate ch<TAB>` and `pollgate completions <TAB>`.
    let probe = format!(
        "set -e; source {}; complete -p pollgate; \
         COMP_WORDS=(pollgate ch); COMP_CWORD=1; _pollgate pollgate ch pollgate; echo \"[${{COMPREPLY[*]}}]\"; \
         COMP_WORDS=(pollgate completions ''); COMP_CWORD=2; _pollgate pollgate '' completions; echo \"[${{COMPREPLY[*]}}]\"",
        script.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &probe])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-F _pollgate pollgate"), "{text}");
    assert!(text.contains("[check]"), "{text}");
    for shell in ["bash", "zsh", "fish"] {
        assert!(text.contains(shell), "{shell} not offered: {text}");
    }
}

#[test]
fn zsh_and_fish_completions_and_the_man_page_come_from_the_same_flags() {
    for shell in ["zsh", "fish"] {
        let out = pollgate().args(["completions", shell]).output().unwrap();
        assert_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("publish") && text.contains("config"),
            "{shell}: {text}"
        );
    }
    let out = pollgate().arg("man").output().unwrap();
    assert_ok(&out);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH pollgate 1"), "{page}");
    for sub in ["check", "publish", "tail", "probe", "completions"] {
        assert!(page.contains(sub), "{sub} missing from the man page");
    }
    let bad = pollgate().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap's usage error");
}
