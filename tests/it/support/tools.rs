//! Outside tools the tests check against (pinned Python packages, Node
//! packages, system programs): installed once per test process, or skipped
//! loudly, and in CI (its `POLLGATE_REQUIRE_*` variable set) never skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use parking_lot::Mutex;

/// Runs `cmd` in `dir`; its stderr is the error.
pub fn run_in(dir: &Path, cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .current_dir(dir)
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The virtualenv `dir/.venv` with `dir/requirements.txt` installed (once
/// per test process); its `bin` directory.
pub fn venv(dir: &Path) -> Result<PathBuf, String> {
    static READY: Mutex<Option<HashMap<PathBuf, Result<PathBuf, String>>>> = Mutex::new(None);
    let mut ready = READY.lock();
    ready
        .get_or_insert_with(HashMap::new)
        .entry(dir.to_owned())
        .or_insert_with(|| {
            if !dir.join(".venv/bin/python").exists() {
                run_in(dir, Command::new("python3").args(["-m", "venv", ".venv"]))?;
            }
            run_in(
                dir,
                Command::new(".venv/bin/pip").args([
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                    "requirements.txt",
                ]),
            )?;
            Ok(dir.join(".venv/bin"))
        })
        .clone()
}

/// Whether `program` runs here (`program arg` starts); when it does not,
/// the test is skipped as `skip` says.
pub fn program(program: &str, arg: &str, require: &str, untested: &str) -> bool {
    if Command::new(program).arg(arg).output().is_ok() {
        return true;
    }
    skip(require, &format!("{program} is not installed"), untested);
    false
}

/// A test that cannot run here: fails when `require` is set (CI), else
/// says loudly what was not tested.
pub fn skip(require: &str, why: &str, untested: &str) {
    assert!(
        std::env::var(require).is_err(),
        "{require} is set but {why}"
    );
    eprintln!("\n*** SKIPPED: {why}: {untested} was NOT tested ***\n");
}
