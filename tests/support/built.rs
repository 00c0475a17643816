//! Examples built for the profile of the running executable, and scratch directories beside
//! them: shared by the tests and by the examples that `#[path]`-include a harness.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target profile directory of the running executable (a test in `target/<profile>/deps`,
/// an example in `target/<profile>/examples`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    exe.parent().and_then(Path::parent).expect("target profile directory").to_owned()
}

/// Example `name`, built for the running executable's profile first so that it is never stale
/// (cargo does nothing when it is up to date).
pub fn example(name: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--example", name]).current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building example {name} failed");
    profile_dir.join("examples").join(name)
}

/// An empty scratch directory `name` under the target directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = profile_dir().parent().expect("target dir").join("scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
