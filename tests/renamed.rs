//! A crate that renames its `durable` dependency (`dur = { package = "durable", .. }`) uses the
//! macros without a `crate = "…"` argument: `cargo check` of `tests/renamed/` must succeed.

use std::path::Path;
use std::process::Command;

#[test]
fn renamed_dependency_is_found() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let package = root.join("tests/renamed");
    // The lock file of the workspace, so the check resolves offline to the same versions.
    std::fs::copy(root.join("Cargo.lock"), package.join("Cargo.lock")).expect("copy Cargo.lock");
    let target = root.join("target/tests/renamed");
    let out = Command::new(env!("CARGO"))
        .args(["check", "--quiet", "--offline", "--manifest-path"])
        .arg(package.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo check of tests/renamed failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
