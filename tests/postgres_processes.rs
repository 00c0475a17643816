//! The invoice example as several processes on one PostgreSQL database: started at once they
//! share the work and all end with `completed:`; one killed with `kill -9` is taken over by the
//! others, and started again it finishes what it left. Needs `DURABLE_PG` (see the README's
//! PostgreSQL section; `.ci/run` starts a throwaway server).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::effects::effects;
use support::{Running, example, scratch};

const LONG: Duration = Duration::from_secs(60);

fn conninfo() -> String {
    match std::env::var("DURABLE_PG") {
        Ok(c) if !c.trim().is_empty() => c,
        _ => panic!(
            "DURABLE_PG is not set: this test needs a PostgreSQL server. Start a throwaway one \
             with `eval \"$(.ci/postgres start)\"` from the repository root."
        ),
    }
}

/// A schema no earlier run used.
fn fresh_schema(name: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("ex_{name}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// Effects per (activity, key).
fn counted(path: &std::path::Path) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for (activity, _, key) in effects(path) {
        *out.entry((activity, key)).or_default() += 1;
    }
    out
}

fn completed(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.starts_with("completed: ")).collect()
}

#[test]
fn two_processes_started_at_once_share_the_work_and_both_complete() {
    let url = conninfo();
    let schema = fresh_schema("share");
    let dir = scratch("pg-share");
    let effects_file = dir.join("effects");
    let exe = example("invoice");
    let args = |workers: &str| {
        vec![
            "--postgres".to_owned(),
            url.clone(),
            "--pg-schema".into(),
            schema.clone(),
            "--instances".into(),
            "30".into(),
            "--workers".into(),
            workers.into(),
            "--delay-ms".into(),
            "20".into(),
            "--effects".into(),
            effects_file.display().to_string(),
        ]
    };
    let a_args = args("1");
    let b_args = args("2");
    let a = Running::start(&exe, &a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let b = Running::start(&exe, &b_args.iter().map(String::as_str).collect::<Vec<_>>());
    let (a_out, a_ok) = a.finish(LONG);
    let (b_out, b_ok) = b.finish(LONG);
    assert!(a_ok && b_ok, "a: {a_out:#?}\nb: {b_out:#?}");
    // Both report every instance, with the same results.
    let (mut a_done, mut b_done) = (completed(&a_out), completed(&b_out));
    a_done.sort();
    b_done.sort();
    assert_eq!(a_done.len(), 30);
    assert_eq!(a_done, b_done);
    // Each call ran once, in one of the processes, and both processes ran some.
    let runs = counted(&effects_file);
    assert_eq!(runs.len(), 60, "{runs:?}");
    assert!(runs.values().all(|n| *n == 1), "a call ran twice without a kill: {runs:?}");
    let ran = |out: &[String]| out.iter().filter(|l| l.starts_with("running ")).count();
    let (by_a, by_b) = (ran(&a_out), ran(&b_out));
    assert_eq!(by_a + by_b, 60);
    assert!(by_a > 0 && by_b > 0, "the work was not shared: a ran {by_a}, b ran {by_b}");
}

#[test]
fn a_killed_process_is_taken_over_and_finishes_what_it_left_when_started_again() {
    let url = conninfo();
    let schema = fresh_schema("kill");
    let dir = scratch("pg-kill");
    let effects_file = dir.join("effects");
    let exe = example("invoice");
    let effects_arg = effects_file.display().to_string();
    let args = |instances: &'static str, extra: &[&'static str]| {
        let mut v = vec![
            "--postgres",
            url.as_str(),
            "--pg-schema",
            schema.as_str(),
            "--instances",
            instances,
            "--lease-ms",
            "1000",
            "--delay-ms",
            "300",
            "--effects",
            effects_arg.as_str(),
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    // A runs invoice-1 alone; killed while its first activity runs.
    let a_args = args("1", &[]);
    let mut a = Running::start(&exe, &a_args.iter().map(String::as_str).collect::<Vec<_>>());
    a.wait_for(LONG, |l| l.starts_with("running issue_invoice for invoice-1"));
    a.kill();
    // B, a client-only process, waits for the same instance: nobody runs it.
    let b_args = args("1", &["--no-worker"]);
    let b = Running::start(&exe, &b_args.iter().map(String::as_str).collect::<Vec<_>>());
    // A started again: it takes the instance over once the dead process's lease ran out and
    // finishes it; B sees the result.
    let a2 = Running::start(&exe, &a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let (a2_out, a2_ok) = a2.finish(LONG);
    let (b_out, b_ok) = b.finish(LONG);
    assert!(a2_ok && b_ok, "a2: {a2_out:#?}\nb: {b_out:#?}");
    assert_eq!(completed(&a2_out), completed(&b_out));
    assert_eq!(completed(&b_out).len(), 1);
    assert!(!b_out.iter().any(|l| l.starts_with("running ")), "the client ran nothing: {b_out:#?}");
    // The interrupted call may have run twice (at least once), the other once.
    let runs = counted(&effects_file);
    let issue = runs.get(&("issue_invoice".into(), "invoice-1:1".into())).copied().unwrap_or(0);
    let notify =
        runs.get(&("notify_about_invoice".into(), "invoice-1:2".into())).copied().unwrap_or(0);
    assert!((1..=2).contains(&issue), "{runs:?}");
    assert_eq!(notify, 1, "{runs:?}");
}
