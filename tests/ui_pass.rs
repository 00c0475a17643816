//! The `tests/ui/pass` cases, compiled once more as modules of this test so that
//! `cargo clippy --all-targets -- -D warnings` lints the macros' expansion too (trybuild builds
//! them without clippy), and run.

#[path = "ui/pass/deny_warnings.rs"]
mod deny_warnings;
#[path = "ui/pass/internal_names.rs"]
mod internal_names;
#[path = "ui/pass/user_items_named_like_generated_ones.rs"]
mod user_items_named_like_generated_ones;

#[test]
fn deny_warnings() {
    deny_warnings::main();
}

#[test]
fn internal_names() {
    internal_names::main();
}

#[test]
fn user_items_named_like_generated_ones() {
    user_items_named_like_generated_ones::main();
}
