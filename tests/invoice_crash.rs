//! The invoice example under `kill -9`: killed during the first activity, between the steps,
//! during the second activity and right after completion, then restarted until it completes.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use support::effects::effects;
use support::{Running, example, scratch};

const LONG: Duration = Duration::from_secs(60);

/// Where to kill the first run.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    DuringFirstActivity,
    BetweenSteps,
    DuringSecondActivity,
    AfterCompletion,
}

struct Observed {
    /// Every line printed, run by run.
    runs: Vec<Vec<String>>,
    /// Activity steps (by name) completed before each kill.
    completed_before_kill: Vec<BTreeSet<String>>,
    /// Activities running (announced, not completed) when each kill landed.
    in_flight_at_kill: Vec<BTreeSet<String>>,
}

fn completed_steps(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("step ").and_then(|r| r.split_once(": ")))
        .filter_map(|(_, rest)| rest.strip_suffix(" completed (invoice-1)").map(str::to_owned))
        .collect()
}

fn started_activities(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            l.strip_prefix("running ").and_then(|r| r.split(' ').next()).map(str::to_owned)
        })
        .collect()
}

fn run_scenario(exe: &Path, dir: &Path, kill: KillAt) -> Observed {
    let db = dir.join("db");
    let fx = dir.join("effects");
    let args =
        ["--db", db.to_str().unwrap(), "--delay-ms", "300", "--effects", fx.to_str().unwrap()];
    let mut obs = Observed {
        runs: Vec::new(),
        completed_before_kill: Vec::new(),
        in_flight_at_kill: Vec::new(),
    };

    let mut run = Running::start(exe, &args);
    let trigger = match kill {
        KillAt::DuringFirstActivity => {
            run.wait_for(LONG, |l| l.starts_with("running issue_invoice"))
        }
        KillAt::BetweenSteps => run.wait_for(LONG, |l| l.contains("issue_invoice completed")),
        KillAt::DuringSecondActivity => {
            run.wait_for(LONG, |l| l.starts_with("running notify_about_invoice"))
        }
        KillAt::AfterCompletion => run.wait_for(LONG, |l| l.starts_with("completed:")),
    };
    assert!(trigger.is_some(), "{kill:?}: the trigger line never came");
    if matches!(kill, KillAt::DuringFirstActivity | KillAt::DuringSecondActivity) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = run.kill();
    let done = completed_steps(&lines);
    let in_flight: BTreeSet<String> =
        started_activities(&lines).into_iter().filter(|a| !done.contains(a)).collect();
    obs.completed_before_kill.push(done);
    obs.in_flight_at_kill.push(in_flight);
    obs.runs.push(lines);

    for _ in 0..5 {
        let (lines, ok) = Running::start(exe, &args).finish(LONG);
        assert!(ok, "{kill:?}: restart failed: {lines:#?}");
        let finished = lines.iter().any(|l| l.starts_with("completed:"));
        obs.runs.push(lines);
        if finished {
            break;
        }
    }
    obs
}

fn check(kill: KillAt, obs: &Observed, fx: &Path) {
    let last = obs.runs.last().unwrap();
    let out = last.iter().find(|l| l.starts_with("completed:")).expect("completed line");
    assert_eq!(out, "completed: INV-invoice-1-1", "{kill:?}");

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (activity, instance, key) in effects(fx) {
        assert_eq!(instance, "invoice-1");
        let expected_key = if activity == "issue_invoice" { "invoice-1:1" } else { "invoice-1:2" };
        assert_eq!(key, expected_key, "{kill:?}: idempotency key of {activity}");
        *counts.entry(activity).or_default() += 1;
    }
    let in_flight: BTreeSet<&String> = obs.in_flight_at_kill.iter().flatten().collect();
    for activity in ["issue_invoice", "notify_about_invoice"] {
        let n = counts.get(activity).copied().unwrap_or(0);
        assert!(n >= 1, "{kill:?}: {activity} has no effect: {counts:?}");
        if n > 1 {
            assert!(
                in_flight.contains(&activity.to_owned()),
                "{kill:?}: {activity} ran {n} times but was not in flight at a kill"
            );
        }
    }
    // No step completed before a kill runs again after it.
    for (i, done) in obs.completed_before_kill.iter().enumerate() {
        for later in &obs.runs[i + 1..] {
            for started in started_activities(later) {
                assert!(
                    !done.contains(&started),
                    "{kill:?}: {started} had completed before kill {i} but ran again"
                );
            }
        }
    }
}

#[test]
fn invoice_survives_kill_9_at_every_step() {
    let exe = example("invoice");
    for kill in [
        KillAt::DuringFirstActivity,
        KillAt::BetweenSteps,
        KillAt::DuringSecondActivity,
        KillAt::AfterCompletion,
    ] {
        let dir = scratch(&format!("invoice-{kill:?}"));
        let obs = run_scenario(&exe, &dir, kill);
        check(kill, &obs, &dir.join("effects"));
        if matches!(kill, KillAt::AfterCompletion) {
            let last = obs.runs.last().unwrap();
            assert!(started_activities(last).is_empty(), "a completed instance called an activity");
        }
    }
}

#[test]
fn invoice_survives_kills_at_random_moments() {
    let exe = example("invoice");
    let dir = scratch("invoice-random");
    let db = dir.join("db");
    let fx = dir.join("effects");
    let args =
        ["--db", db.to_str().unwrap(), "--delay-ms", "40", "--effects", fx.to_str().unwrap()];
    let mut obs = Observed {
        runs: Vec::new(),
        completed_before_kill: Vec::new(),
        in_flight_at_kill: Vec::new(),
    };
    let mut seed = 0x2545_f491_u64;
    let mut all_done = BTreeSet::new();
    for _ in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run = Running::start(&exe, &args);
        std::thread::sleep(Duration::from_millis(seed % 120));
        let lines = run.kill();
        all_done.extend(completed_steps(&lines));
        let in_flight =
            started_activities(&lines).into_iter().filter(|a| !all_done.contains(a)).collect();
        obs.completed_before_kill.push(all_done.clone());
        obs.in_flight_at_kill.push(in_flight);
        obs.runs.push(lines);
    }
    let (lines, ok) = Running::start(&exe, &args).finish(LONG);
    assert!(ok);
    obs.runs.push(lines);
    check(KillAt::DuringFirstActivity, &obs, &fx);
}

#[test]
fn a_second_process_on_the_same_database_gets_a_clear_error() {
    let exe = example("invoice");
    let dir = scratch("invoice-locked");
    let db = dir.join("db");
    let db = db.to_str().unwrap();
    let mut first = Running::start(&exe, &["--db", db, "--delay-ms", "5000"]);
    first.wait_for(LONG, |l| l.starts_with("running issue_invoice"));
    let out = std::process::Command::new(&exe).args(["--db", db]).output().unwrap();
    first.kill();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by another process") && err.contains(db), "{err}");
}
