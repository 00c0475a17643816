//! What the orchestration compiler stores: only live locals, a 100,000-iteration loop resumed in
//! the middle without re-running earlier iterations, and values that would not round-trip
//! through the codec caught at their first checkpoint.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use durable::{
    ActivityContext, Ctx, Durability, Failure, InstanceError, Orchestration, Runtime, activity,
    orchestration,
};
use serde::{Deserialize, Serialize};
use support::harness::{fresh_db, open};

#[activity]
async fn measure(data: Vec<u8>) -> Result<u64, String> {
    Ok(data.len() as u64)
}

#[activity]
async fn wait_a_bit(ms: u64) -> Result<u64, String> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[orchestration]
async fn big_then_small(ctx: Ctx, size: usize) -> Result<u64, Failure> {
    let big = vec![7u8; size];
    let first = ctx.call(wait_a_bit, 1).await?;
    let len = ctx.call(measure, big).await? + first;
    let label = format!("{len} bytes");
    let waited = ctx.call(wait_a_bit, 60_000).await?;
    Ok(waited + label.len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_local_dead_after_step_one_is_not_stored_later() {
    // What the macro says each point stores…
    let points = big_then_small().points();
    assert_eq!(points.len(), 3);
    assert_eq!(points[0].locals, ["big"] as [&str; 1], "`big` is used after the first await");
    assert_eq!(points[1].locals, ["first"] as [&str; 1], "`big` is dead once passed");
    assert_eq!(points[2].locals, ["label"] as [&str; 1]);
    // …and what the stored frame holds while the instance waits at the second point.
    let db = fresh_db("liveness");
    let rt = open(|| Runtime::builder(&db).orchestration(big_then_small)).await;
    rt.start(big_then_small, "big", 1 << 20).await.unwrap();
    let mut status = None;
    for _ in 0..2000 {
        let s = rt.status("big").unwrap().unwrap();
        if s.point.as_ref().is_some_and(|(identity, _)| identity == "call(wait_a_bit)#1") {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = status.expect("reached the second point");
    assert_eq!(status.stored_locals, [("label".to_string(), "alloc::string::String".to_string())]);
    assert!(status.frame_bytes < 64, "frame of {} bytes", status.frame_bytes);
    rt.shutdown().await;
}

static BODY_RUNS: AtomicU64 = AtomicU64::new(0);
static ACTIVITY_RUNS: AtomicU64 = AtomicU64::new(0);
static LOWEST_AFTER_RESTART: AtomicU64 = AtomicU64::new(u64::MAX);
static RESTARTED: AtomicU64 = AtomicU64::new(0);

#[activity]
async fn add_index(ctx: ActivityContext, sum: u64, i: u64) -> Result<u64, String> {
    let _ = ctx;
    ACTIVITY_RUNS.fetch_add(1, Ordering::SeqCst);
    if RESTARTED.load(Ordering::SeqCst) == 1 {
        LOWEST_AFTER_RESTART.fetch_min(i, Ordering::SeqCst);
    }
    Ok(sum + i)
}

#[orchestration]
async fn long_loop(ctx: Ctx, n: u64) -> Result<u64, Failure> {
    let mut sum = 0;
    for i in 0..n {
        BODY_RUNS.fetch_add(1, Ordering::SeqCst);
        sum = ctx.call(add_index, (sum, i)).await?;
    }
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_loop_resumes_at_70k_without_running_earlier_iterations() {
    const N: u64 = 100_000;
    const STOP: u64 = 70_000;
    let db = fresh_db("long-loop");
    let reached = Arc::new(tokio::sync::Notify::new());
    let rt = {
        let reached = reached.clone();
        // Buffered durability builds the history fast; the stop below is a clean shutdown.
        open(|| {
            let reached = reached.clone();
            Runtime::builder(&db).orchestration(long_loop).durability(Durability::Buffered).on_step(
                move |e| {
                    if e.step == STOP {
                        reached.notify_one();
                    }
                },
            )
        })
        .await
    };
    let notified = reached.notified();
    rt.start(long_loop, "long", N).await.unwrap();
    notified.await;
    rt.shutdown().await;
    drop(rt);
    let body_before = BODY_RUNS.load(Ordering::SeqCst);
    let activity_before = ACTIVITY_RUNS.load(Ordering::SeqCst);
    assert!(body_before >= STOP, "{body_before}");
    let status_steps = {
        let rt = open(|| Runtime::builder(&db)).await;
        let s = rt.status("long").unwrap().unwrap();
        rt.shutdown().await;
        s.steps
    };
    assert!(status_steps >= STOP, "stopped at {status_steps}");

    RESTARTED.store(1, Ordering::SeqCst);
    let rt = open(|| Runtime::builder(&db).orchestration(long_loop)).await;
    let out = rt
        .handle::<long_loop>("long")
        .wait_timeout(Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, N * (N - 1) / 2);
    let body_after = BODY_RUNS.load(Ordering::SeqCst) - body_before;
    let activity_after = ACTIVITY_RUNS.load(Ordering::SeqCst) - activity_before;
    let remaining = N - status_steps + 1;
    // The loop body ran only for the iterations after the checkpoint it resumed from.
    assert!(
        body_after <= remaining,
        "body ran {body_after} times after the restart, {remaining} left"
    );
    assert!(activity_after <= remaining + 1, "{activity_after} activity runs after the restart");
    assert!(
        LOWEST_AFTER_RESTART.load(Ordering::SeqCst) + 1 >= status_steps,
        "an earlier iteration ran again"
    );
    rt.shutdown().await;
}

/// Serializes, but bincode cannot read it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Shape {
    Circle(u64),
    Named(String),
}

#[orchestration]
async fn keeps_an_untagged_enum(ctx: Ctx, x: u64) -> Result<String, Failure> {
    let shape = if x > 0 { Shape::Circle(x) } else { Shape::Named("none".into()) };
    let n = ctx.call(wait_a_bit, 1).await?;
    Ok(format!("{shape:?} {n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_round_trip_fails_at_its_first_checkpoint() {
    let db = fresh_db("no-round-trip");
    let rt = open(|| Runtime::builder(&db).orchestration(keeps_an_untagged_enum)).await;
    let h = rt.start(keeps_an_untagged_enum, "untagged", 3).await.unwrap();
    match h.wait_timeout(Duration::from_secs(10)).await.unwrap() {
        Err(InstanceError::Faulted(message)) => {
            assert!(message.contains("untagged"), "{message}");
            assert!(message.contains("local `shape`"), "{message}");
            assert!(message.contains("does not round-trip"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
