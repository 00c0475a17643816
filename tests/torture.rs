//! Crash torture at CI size: the torture worker (`examples/torture.rs`) is SIGKILLed about 50
//! times at random moments while it runs many instances mixing sequences, loops, fan-out,
//! timers, events and sub-orchestrations, then compared with a run that was never killed. See
//! `tests/support/torture.rs` for what is checked.
//!
//! `TORTURE_SEED=0x… cargo test --test torture` reuses a seed; `TORTURE_KILLS=N` changes the
//! size. The long mode is `cargo run --example torture_driver -- --kills 1000`.

#[path = "support/torture.rs"]
mod torture;

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn every_instance_survives_random_kill_9s_with_the_reference_result() {
    let kills = env_number("TORTURE_KILLS").and_then(|k| usize::try_from(k).ok()).unwrap_or(50);
    let seed = env_number("TORTURE_SEED").unwrap_or_else(torture::clock_seed);
    println!("torture: seed {seed:#x} (TORTURE_SEED={seed:#x} reuses it)");
    let cfg = torture::Config::new(kills, seed, torture::scratch("torture-ci"), torture::worker());
    let summary = torture::run(&cfg);
    for v in &summary.violations {
        println!("violation: {v}");
    }
    println!("{}", summary.line());
    assert!(summary.violations.is_empty(), "{}", summary.line());
}

/// The checks can fail: with checkpoints left unflushed (`Durability::Buffered`), kills lose
/// steps the worker had already reported, and the driver must say so.
#[test]
fn the_checks_catch_checkpoints_lost_by_unflushed_writes() {
    let seed = env_number("TORTURE_SEED").unwrap_or_else(torture::clock_seed);
    println!("torture: seed {seed:#x}");
    let mut cfg =
        torture::Config::new(8, seed, torture::scratch("torture-buffered"), torture::worker());
    cfg.kills_per_epoch = 8;
    cfg.worker_args = vec!["--durability".into(), "buffered".into()];
    let summary = torture::run(&cfg);
    println!("{}", summary.line());
    for v in &summary.violations {
        println!("violation: {v}");
    }
    let repeated = summary
        .violations
        .iter()
        .filter(|v| v.contains("checkpointed step executed again"))
        .count();
    assert!(repeated > 0, "lost checkpoints went unnoticed: {:#?}", summary.violations);
}
