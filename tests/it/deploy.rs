//! The deployment recipes in deploy/ are checked, not just shipped.

use std::process::Command;

use crate::support::*;

#[test]
fn the_nginx_recipe_passes_nginx_t() {
    if Command::new("nginx").arg("-v").output().is_err() {
        assert!(
            std::env::var("POLLGATE_REQUIRE_NGINX").is_err(),
            "nginx is required but not installed"
        );
        eprintln!(
            "\n*** SKIPPED: nginx not installed: deploy/nginx/nginx.conf was NOT checked ***\n"
        );
        return;
    }
    let prefix = tempfile::tempdir().unwrap();
    let conf = std::fs::canonicalize("deploy/nginx/nginx.conf").unwrap();
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(prefix.path())
        .arg("-e")
        .arg(prefix.path().join("error.log"))
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("syntax is ok"),
        "{text}"
    );
}

#[test]
fn the_kubernetes_sidecar_config_is_a_valid_pollgate_config() {
    let text = std::fs::read_to_string("deploy/kubernetes/sidecar.yaml").unwrap();
    let config_map: serde_yaml::Value = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_yaml::Value| d["kind"] == "ConfigMap")
        .unwrap();
    let embedded = config_map["data"]["pollgate.yaml"].as_str().unwrap();
    pollgate::config::Config::from_yaml(embedded, "sidecar.yaml").unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_systemd_unit_reloads_with_sighup() {
    let unit = std::fs::read_to_string("deploy/systemd/pollgate.service").unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("ExecStart=/usr/local/bin/pollgate --config"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_succeeds_on_200_and_fails_otherwise() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let ok = pollgate_bin()
        .args(["probe", "--url", &pg.hook("/readyz")])
        .status()
        .unwrap();
    assert!(ok.success());
    let bad = pollgate_bin()
        .args(["probe", "--url", &pg.hook("/nope")])
        .status()
        .unwrap();
    assert_eq!(bad.code(), Some(1));
}
