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

/// Every pollgate config in deploy/, as files: a YAML file with `routes`
/// is one, and a Kubernetes manifest carries one in a ConfigMap's
/// `pollgate.yaml` (written out under `dir`). Found by looking, so a new
/// recipe is checked without a change here.
fn deploy_configs(dir: &tempfile::TempDir) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::from("deploy")];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if !path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
                let doc: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
                if doc.get("routes").is_some() {
                    found.push(path.clone());
                } else if doc["kind"] == "ConfigMap" {
                    if let Some(embedded) = doc["data"]["pollgate.yaml"].as_str() {
                        let name = path.file_stem().unwrap().to_string_lossy();
                        let out = dir.path().join(format!("{name}-{i}-pollgate.yaml"));
                        std::fs::write(&out, embedded).unwrap();
                        found.push(out);
                    }
                }
            }
        }
    }
    found
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
    let mut files = vec![
        PathBuf::from("config/pollgate.yaml"),
        PathBuf::from("benches/bench.yaml"),
    ];
    let recipes = deploy_configs(&dir);
    assert!(!recipes.is_empty(), "no pollgate config found in deploy/");
    files.extend(recipes);
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
    assert!(files.len() >= 28, "{files:?}");
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
