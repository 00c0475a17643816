//! Compile-time diagnostics of `#[orchestration]` and `#[activity]`: one `tests/ui/fail/<area>/`
//! case per diagnostic, with the expected compiler output beside it in a `.stderr` file, and
//! `tests/ui/pass/` cases that must compile (and run) cleanly.
//!
//! The snapshots depend on the compiler version: they are made with the toolchain pinned in
//! `rust-toolchain.toml`, without the `rust-src` component. After a deliberate change to a
//! diagnostic, re-bless with `TRYBUILD=overwrite cargo test --test ui` and review every changed
//! `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
