//! The differential tester: each case's body as plain Rust and as an orchestration, run
//! uninterrupted and stopped after every checkpoint, must give the same output and the same
//! activity calls, with no completed call run twice. See `tests/support/differential.rs`.
//!
//! CI runs every case in process, and every case with a real process aborted after each
//! checkpoint. `cargo run --example differential -- long` runs the long mode (README).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

#[macro_use]
#[path = "support/differential.rs"]
mod differential;
#[path = "support/differential_cases.rs"]
mod cases;
#[path = "support/differential_generated.rs"]
mod generated;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_matches_plain_rust_with_a_stop_after_every_checkpoint() {
    let mut checked = 0;
    for case in cases::CASES {
        let steps = differential::check_in_process(case, "ci").await;
        assert!(steps >= 2, "{}: only {steps} checkpoints", case.name);
        checked += 1;
    }
    assert_eq!(checked, cases::CASES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_matches_plain_rust_with_a_process_aborted_after_every_checkpoint() {
    // Built every time: a driver left from an older build would not know the newest cases.
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "differential"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building the differential driver failed");
    let exe = support::example("differential");
    let dir = support::scratch("differential-processes");
    for case in cases::CASES {
        differential::check_with_processes(case, "proc", &exe, &dir).await;
    }
}

/// The checked-in seeded batch of random bodies (`examples/differential_gen.rs`), stopped in
/// process after every checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_bodies_match_plain_rust_with_a_stop_after_every_checkpoint() {
    let mut checkpoints = 0;
    for case in generated::GENERATED {
        checkpoints += differential::check_in_process(case, "ci").await;
    }
    assert!(checkpoints > 2 * generated::GENERATED.len() as u64, "{checkpoints} checkpoints");
}
