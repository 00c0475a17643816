//! Retry policies beyond attempts and backoff, each with a restart in the middle: the overall
//! retry timeout.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::time::{Duration, UNIX_EPOCH};

use durable::{
    ActivityContext, ActivityError, Clock, Ctx, Failure, Handle, Orchestration, Parked,
    RetryPolicy, Runtime, RuntimeBuilder, activity, orchestration,
};
use support::harness::{activity_body, executions, fresh_db, open};

fn manual_clock() -> Clock {
    Clock::manual(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
}

async fn restart(rt: Runtime, builder: impl Fn() -> RuntimeBuilder) -> Runtime {
    rt.shutdown().await;
    drop(rt);
    open(builder).await
}

/// Waits until `h` is parked at `at`, failing the test after 10 s.
async fn parked<O: Orchestration>(h: &Handle<O>, at: Parked) {
    tokio::time::timeout(Duration::from_secs(10), h.parked(at.clone()))
        .await
        .unwrap_or_else(|_| panic!("{} never parked at {at:?}", h.id()))
        .unwrap();
}

fn attempts(instance: &str) -> u64 {
    executions(instance).values().sum()
}

#[activity]
async fn always_fails(ctx: ActivityContext, _x: u32) -> Result<u32, String> {
    activity_body(&ctx).await;
    Err(format!("attempt {} failed", ctx.attempt()))
}

// ----- retry timeout -----

/// Up to ten attempts 10 s, 20 s, 40 s… apart, but all within 25 s of the call.
#[orchestration]
async fn impatient(ctx: Ctx, x: u32) -> Result<String, Failure> {
    let policy = RetryPolicy::attempts(10)
        .backoff_from(Duration::from_secs(10))
        .retry_timeout(Duration::from_secs(25));
    match ctx.call(always_fails, x).with_retry(policy).await {
        Ok(_) => Ok("succeeded".into()),
        Err(ActivityError::Failed(e)) => Ok(format!("gave up: {e}")),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_timeout_ends_the_retries_without_a_last_sleep_across_a_restart() {
    let db = fresh_db("retry-timeout");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(impatient).clock(clock.clone());
    let rt = open(b).await;
    let h = rt.start(impatient, "impatient", 0).await.unwrap();
    parked(&h, Parked::Backoff).await;
    assert_eq!(attempts("impatient"), 1);
    drop(h);
    // The restarted runtime keeps the time the call was issued.
    let rt = restart(rt, b).await;
    clock.advance(Duration::from_secs(10));
    // The second attempt fails at +10 s; the next would begin at +30 s, past the timeout of
    // 25 s: the call fails at once, with the clock standing at +10 s.
    let out = rt
        .handle::<impatient>("impatient")
        .wait_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "gave up: attempt 2 failed");
    assert_eq!(attempts("impatient"), 2, "no attempt after the timeout");
    rt.shutdown().await;
}
