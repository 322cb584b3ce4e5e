//! The config's JSON Schema (`pollgate schema`) agrees with pollgate:
//! checked with an independent validator (`check-jsonschema` from PyPI,
//! pinned in tests/schema/), every shipped config passes both, and every
//! file in tests/schema/invalid/ is refused by both.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{check, pollgate_bin, tools};

/// The validator, installed on first use; `None` (after a loud skip) when
/// it cannot be, unless CI requires it.
fn validator() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema");
    match tools::venv(&dir) {
        Ok(bin) => Some(bin.join("check-jsonschema")),
        Err(why) => {
            tools::skip(
                "POLLGATE_REQUIRE_SCHEMA",
                &format!("check-jsonschema could not be installed ({why})"),
                "the config schema",
            );
            None
        }
    }
}

/// `pollgate schema`, as a file the validator can read.
fn schema_file(dir: &tempfile::TempDir) -> PathBuf {
    let out = pollgate_bin().arg("schema").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let path = dir.path().join("pollgate.schema.json");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// The validator's verdict on one file: its exit code and what it said.
fn validate(validator: &Path, schema: &Path, file: &Path) -> (Option<i32>, String) {
    let out = Command::new(validator)
        .arg("--schemafile")
        .arg(schema)
        .arg(file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_schema_in_config_is_what_pollgate_schema_prints() {
    // Editors read config/pollgate.schema.json (the modeline at the top of
    // config/pollgate.yaml); it must be the current one.
    let out = pollgate_bin().arg("schema").output().unwrap();
    let shipped = std::fs::read_to_string("config/pollgate.schema.json").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        shipped,
        "run `pollgate schema > config/pollgate.schema.json`"
    );
    let config = std::fs::read_to_string("config/pollgate.yaml").unwrap();
    assert!(
        config.starts_with("# yaml-language-server: $schema=pollgate.schema.json\n"),
        "config/pollgate.yaml lost its modeline"
    );
}

#[test]
fn every_shipped_config_passes_the_schema_and_pollgate_check() {
    let Some(validator) = validator() else { return };
    let dir = tempfile::tempdir().unwrap();
    let schema = schema_file(&dir);
    // The Kubernetes recipe carries its config inside a ConfigMap.
    let text = std::fs::read_to_string("deploy/kubernetes/sidecar.yaml").unwrap();
    let config_map: serde_yaml::Value = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_yaml::Value| d["kind"] == "ConfigMap")
        .unwrap();
    let sidecar = dir.path().join("sidecar-pollgate.yaml");
    std::fs::write(
        &sidecar,
        config_map["data"]["pollgate.yaml"].as_str().unwrap(),
    )
    .unwrap();
    let mut files = vec![
        PathBuf::from("config/pollgate.yaml"),
        PathBuf::from("benches/bench.yaml"),
        sidecar,
    ];
    files.extend(yaml_files("tests/schema/valid"));
    for file in files {
        let (code, said) = validate(&validator, &schema, &file);
        assert_eq!(code, Some(0), "{}: {said}", file.display());
        let out = check(&file);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_invalid_file_is_refused_by_the_schema_and_by_pollgate_check() {
    let Some(validator) = validator() else { return };
    let dir = tempfile::tempdir().unwrap();
    let schema = schema_file(&dir);
    let files = yaml_files("tests/schema/invalid");
    assert!(files.len() >= 20, "{files:?}");
    for file in files {
        let (code, said) = validate(&validator, &schema, &file);
        // 1 is "not valid"; anything else (a YAML or usage error) would
        // not be the schema's verdict.
        assert_eq!(
            code,
            Some(1),
            "{}: the schema let it pass: {said}",
            file.display()
        );
        // The first line names the key pollgate's own check must blame.
        let text = std::fs::read_to_string(&file).unwrap();
        let key = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# pollgate check: "))
            .unwrap_or_else(|| panic!("{}: first line names no key", file.display()));
        let out = check(&file);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", file.display());
        assert!(
            err.contains(key),
            "{}: no error at {key:?}: {err}",
            file.display()
        );
    }
}
