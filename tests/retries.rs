//! Retry policies beyond attempts and backoff, each with a restart in the middle: the overall
//! retry timeout, retried sub-orchestrations, an activity's own policy and retry predicate.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::time::{Duration, UNIX_EPOCH};

use durable::{
    ActivityContext, ActivityError, ChildError, Clock, Ctx, Failure, Handle, Orchestration, Parked,
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

// ----- sub-orchestrations -----

/// Succeeds on its third attempt (the instance whose id ends with `#3`), fails before.
#[orchestration]
async fn fragile(ctx: Ctx, x: u32) -> Result<String, Failure> {
    let me = ctx.instance_id().to_owned();
    if me.ends_with("#3") {
        Ok(format!("{me} did {x}"))
    } else {
        Err(Failure::new(format!("{me} failed")))
    }
}

/// Runs `fragile` with up to `attempts` attempts 10 s, 20 s… apart, under `id` when given.
#[orchestration]
async fn persistent(ctx: Ctx, attempts: u32, id: Option<String>) -> Result<String, Failure> {
    let policy = RetryPolicy::attempts(attempts).backoff_from(Duration::from_secs(10));
    let child = ctx.child(fragile, 5).with_retry(policy);
    let child = match id {
        Some(id) => child.with_id(id),
        None => child,
    };
    match child.await {
        Ok(s) => Ok(s),
        Err(ChildError::Failed(e)) => Ok(format!("gave up: {e}")),
        Err(e) => Err(e.into()),
    }
}

fn state_and_parent(rt: &Runtime, id: &str) -> (String, Option<String>) {
    let s = rt.status(id).unwrap().unwrap_or_else(|| panic!("no instance {id}"));
    let state = format!("{:?}", s.state);
    (state.split([' ', '{']).next().unwrap().to_owned(), s.parent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_child_starts_again_under_a_new_attempt_id_across_a_restart() {
    let db = fresh_db("child-retries");
    let clock = manual_clock();
    let b = || {
        Runtime::builder(&db).orchestration(persistent).orchestration(fragile).clock(clock.clone())
    };
    let rt = open(b).await;
    let ok = rt.start(persistent, "p", (3, None)).await.unwrap();
    let short = rt.start(persistent, "q", (2, Some("chosen".to_owned()))).await.unwrap();
    parked(&ok, Parked::Backoff).await;
    parked(&short, Parked::Backoff).await;
    assert!(rt.status("~p:1#2").unwrap().is_none(), "no second attempt before the backoff");
    drop((ok, short));
    let rt = restart(rt, b).await;
    clock.advance(Duration::from_secs(10));
    // `q` had two attempts: it gets the last one's error.
    let out = rt.handle::<persistent>("q").wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(out.unwrap(), "gave up: chosen#2 failed");
    let ok = rt.handle::<persistent>("p");
    parked(&ok, Parked::Backoff).await;
    assert!(rt.status("~p:1#3").unwrap().is_none(), "the backoff doubled");
    clock.advance(Duration::from_secs(20));
    let out = ok.wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(out.unwrap(), "~p:1#3 did 5");
    // Every attempt is an instance of its own, kept with its parent.
    let p = Some("p".to_owned());
    assert_eq!(state_and_parent(&rt, "~p:1"), ("Failed".to_owned(), p.clone()));
    assert_eq!(state_and_parent(&rt, "~p:1#2"), ("Failed".to_owned(), p.clone()));
    assert_eq!(state_and_parent(&rt, "~p:1#3"), ("Completed".to_owned(), p));
    let q = Some("q".to_owned());
    assert_eq!(state_and_parent(&rt, "chosen"), ("Failed".to_owned(), q.clone()));
    assert_eq!(state_and_parent(&rt, "chosen#2"), ("Failed".to_owned(), q));
    assert!(rt.status("chosen#3").unwrap().is_none());
    rt.shutdown().await;
}

// ----- an activity's own policy and predicate -----

/// Whether a failure is worth another attempt: anything but a declined card.
fn is_transient(e: &ActivityError<String>) -> bool {
    e.failed().is_none_or(|m| m != "card declined")
}

/// `transient`: busy on its first two attempts; `declined later`: busy once, then declined;
/// `declined`: declined at once.
#[activity(
    retry = RetryPolicy::attempts(4).backoff_from(Duration::from_secs(10)),
    retry_if = is_transient
)]
async fn charge(ctx: ActivityContext, mode: String) -> Result<u32, String> {
    activity_body(&ctx).await;
    match (mode.as_str(), ctx.attempt()) {
        ("transient", 1 | 2) | ("declined later", 1) => Err("busy".into()),
        ("transient", n) => Ok(n),
        _ => Err("card declined".into()),
    }
}

/// Calls `charge` with no policy of its own: the activity's applies.
#[orchestration]
async fn pay(ctx: Ctx, mode: String) -> Result<String, Failure> {
    match ctx.call(charge, mode).await {
        Ok(n) => Ok(format!("charged on attempt {n}")),
        Err(ActivityError::Failed(e)) => Ok(format!("failed: {e}")),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activitys_policy_and_predicate_apply_to_its_calls_across_a_restart() {
    let db = fresh_db("activity-retry");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(pay).clock(clock.clone());
    let rt = open(b).await;
    let declined = rt.start(pay, "declined", "declined".to_owned()).await.unwrap();
    let out = declined.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(out, "failed: card declined");
    assert_eq!(attempts("declined"), 1, "the predicate refused a retry the policy allowed");
    drop(declined);
    for id in ["transient", "declined later"] {
        let h = rt.start(pay, id, id.to_owned()).await.unwrap();
        parked(&h, Parked::Backoff).await;
        assert_eq!(attempts(id), 1, "{id}");
    }
    // The restarted process asks the predicate again: it is code, not stored.
    let rt = restart(rt, b).await;
    clock.advance(Duration::from_secs(10));
    let later = rt.handle::<pay>("declined later");
    let out = later.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(out, "failed: card declined");
    assert_eq!(attempts("declined later"), 2, "no retry after the declined attempt");
    let transient = rt.handle::<pay>("transient");
    parked(&transient, Parked::Backoff).await;
    clock.advance(Duration::from_secs(20));
    let out = transient.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(out, "charged on attempt 3");
    assert_eq!(attempts("transient"), 3);
    rt.shutdown().await;
}
