//! The deployment recipes in deploy/ are checked, not just shipped.

use std::process::Command;

use crate::support::*;

#[test]
fn the_nginx_recipe_passes_nginx_t() {
    if !tools::program(
        "nginx",
        "-v",
        "POLLGATE_REQUIRE_NGINX",
        "deploy/nginx/nginx.conf",
    ) {
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

/// `systemd-analyze verify` on `unit` (its text), with the pollgate of
/// this build in place of the installed one; what it warned about.
fn systemd_verify(unit: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pollgate.service");
    let unit = unit.replace("/usr/local/bin/pollgate", env!("CARGO_BIN_EXE_pollgate"));
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ) + if out.status.success() { "" } else { "(failed)" }
}

#[test]
fn the_systemd_unit_is_one_systemd_accepts_and_reloads_with_sighup() {
    let unit = std::fs::read_to_string("deploy/systemd/pollgate.service").unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("ExecStart=/usr/local/bin/pollgate --config"));
    if !tools::program(
        "systemd-analyze",
        "--version",
        "POLLGATE_REQUIRE_SYSTEMD",
        "the systemd unit against systemd",
    ) {
        return;
    }
    // systemd warns (and goes on) about what it does not understand.
    assert_eq!(systemd_verify(&unit), "", "systemd-analyze verify");
    let broken = unit.replace("Restart=on-failure", "Restart=sometimes");
    assert!(!systemd_verify(&broken).is_empty(), "the check can fail");
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

#[test]
fn the_prometheus_alerts_pass_promtool() {
    if !tools::program(
        "promtool",
        "--version",
        "POLLGATE_REQUIRE_PROMTOOL",
        "deploy/prometheus/alerts.yml",
    ) {
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "rules", "deploy/prometheus/alerts.yml"])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_name_is_served() {
    let pg = Pollgate::start(&yaml(None, "")).await;
    let served = get(&pg.hook("/metrics")).await.body;
    // The series a family is scraped as (`# TYPE name kind`): a counter
    // as `name_total`, a histogram as its buckets, sum and count.
    let mut names = std::collections::BTreeSet::new();
    for line in served.lines() {
        let mut words = line.strip_prefix("# TYPE ").unwrap_or_default().split(' ');
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for part in ["bucket", "sum", "count"] {
                    names.insert(format!("{name}_{part}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    let dashboard = std::fs::read_to_string("deploy/grafana/pollgate-dashboard.json").unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = parsed["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{panel}"
            );
        }
    }
    let alerts = std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap();
    for (file, text) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        let used = metric_names(text);
        assert!(used.len() >= 6, "{file}: {used:?}");
        for name in used {
            assert!(
                names.contains(&name),
                "{file} uses {name}, which /metrics does not serve"
            );
        }
    }
}

/// Every `pollgate_...` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("pollgate_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}
