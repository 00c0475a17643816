//! The durable operations and the client, each with a restart in the middle.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use durable::store::{SledStore, Store};
use durable::{
    ActivityContext, ActivityError, AnyOutput, Call, ChildError, ClientError, Clock, Ctx, Either,
    EventError, Failure, Handle, InstanceError, InstanceState, InstanceStatus, IntoAnyOp,
    ListFilter, Parked, RetryPolicy, Runtime, RuntimeBuilder, Scope, SignalWithStartError, Sleep,
    StartError, WaitEvent, activity, orchestration,
};
use support::harness::{activity_body, executions, fresh_db, open};
use support::slow_inbox::SlowInbox;

fn manual_clock() -> Clock {
    Clock::manual(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
}

/// Polls `f` until it holds (status changes are asynchronous).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never happened: {what}");
}

/// Waits until `h` is parked at `at`, failing the test after 10 s.
async fn parked<O: durable::Orchestration>(h: &Handle<O>, at: Parked) -> InstanceStatus {
    tokio::time::timeout(Duration::from_secs(10), h.parked(at.clone()))
        .await
        .unwrap_or_else(|_| panic!("{} never parked at {at:?}", h.id()))
        .unwrap()
}

fn pending_of(rt: &Runtime, id: &str) -> Option<String> {
    rt.status(id).unwrap().and_then(|s| s.pending)
}

async fn restart(rt: Runtime, builder: impl Fn() -> RuntimeBuilder) -> Runtime {
    rt.shutdown().await;
    drop(rt);
    open(builder).await
}

#[activity]
async fn double(ctx: ActivityContext, x: u64) -> Result<u64, String> {
    activity_body(&ctx).await;
    Ok(x * 2)
}

#[activity]
async fn slow_double(ctx: ActivityContext, x: u64, ms: u64) -> Result<u64, String> {
    activity_body(&ctx).await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(x * 2)
}

/// Fails its first `fails` attempts.
#[activity]
async fn flaky(ctx: ActivityContext, fails: u32) -> Result<u32, String> {
    activity_body(&ctx).await;
    if ctx.attempt() <= fails {
        Err(format!("attempt {} failed", ctx.attempt()))
    } else {
        Ok(ctx.attempt())
    }
}

// ----- timers -----

#[orchestration]
async fn nap(ctx: Ctx, minutes: u64) -> Result<u64, Failure> {
    let before = ctx.now();
    ctx.sleep(Duration::from_secs(60 * minutes)).await;
    let slept = ctx.now().duration_since(before).unwrap_or_default().as_secs() / 60;
    let d = ctx.call(double, slept).await?;
    Ok(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_fires_after_a_restart_on_the_manual_clock() {
    let db = fresh_db("timer-restart");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(nap).clock(clock.clone());
    let rt = open(b).await;
    rt.start(nap, "nap", 30).await.unwrap();
    eventually("parked at the timer", || pending_of(&rt, "nap").as_deref() == Some("timer")).await;
    let rt = restart(rt, b).await;
    clock.advance(Duration::from_secs(29 * 60));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pending_of(&rt, "nap").as_deref(), Some("timer"), "fired early");
    clock.advance(Duration::from_secs(60));
    let out = rt.handle::<nap>("nap").wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(out, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_that_came_due_while_down_fires_on_open() {
    let db = fresh_db("timer-due-while-down");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(nap).clock(clock.clone());
    let rt = open(b).await;
    rt.start(nap, "nap-down", 10).await.unwrap();
    eventually("parked", || pending_of(&rt, "nap-down").as_deref() == Some("timer")).await;
    rt.shutdown().await;
    drop(rt);
    clock.advance(Duration::from_secs(3600));
    let rt = open(b).await;
    let out =
        rt.handle::<nap>("nap-down").wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(out, 120, "the step after the timer sees the time it resumed at");
}

// ----- events -----

#[orchestration]
async fn collect(ctx: Ctx, n: u32) -> Result<Vec<String>, Failure> {
    let mut got = Vec::new();
    for _ in 0..n {
        let v: String = ctx.wait_event("item").await?;
        got.push(v);
    }
    let other: u64 = ctx.wait_event("other").await?;
    got.push(other.to_string());
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_buffered_first_in_first_out_per_name() {
    let db = fresh_db("events-fifo");
    let b = || Runtime::builder(&db).orchestration(collect);
    let rt = open(b).await;
    // Unknown instance: an error, not a silent drop.
    assert!(matches!(rt.raise_event("nobody", "item", &1u8).await, Err(ClientError::NotFound(_))));
    rt.start(collect, "fifo", 3).await.unwrap();
    // Raised before the orchestration waits: "other" first, then the items in order.
    rt.raise_event("fifo", "other", &7u64).await.unwrap();
    rt.raise_event("fifo", "item", &"a".to_string()).await.unwrap();
    let rt = restart(rt, b).await;
    rt.raise_event("fifo", "item", &"b".to_string()).await.unwrap();
    rt.raise_event("fifo", "item", &"c".to_string()).await.unwrap();
    let out =
        rt.handle::<collect>("fifo").wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(out, ["a", "b", "c", "7"]);
    // Finished instance: reported.
    match rt.raise_event("fifo", "item", &"late".to_string()).await {
        Err(ClientError::Finished { state: InstanceState::Completed, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[orchestration]
async fn approve_or_timeout(ctx: Ctx, hours: u64) -> Result<String, Failure> {
    let answer =
        ctx.wait_event::<bool>("approval").timeout(Duration::from_secs(3600 * hours)).await;
    match answer {
        Ok(true) => Ok("approved".into()),
        Ok(false) => Ok("rejected".into()),
        Err(EventError::TimedOut(name)) => Ok(format!("no {name}")),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_wait_times_out() {
    let db = fresh_db("event-timeout");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(approve_or_timeout).clock(clock.clone());
    let rt = open(b).await;
    rt.start(approve_or_timeout, "late", 2).await.unwrap();
    rt.start(approve_or_timeout, "prompt", 2).await.unwrap();
    eventually("waiting", || {
        pending_of(&rt, "late").is_some() && pending_of(&rt, "prompt").is_some()
    })
    .await;
    let rt = restart(rt, b).await;
    rt.raise_event("prompt", "approval", &true).await.unwrap();
    let prompt = rt.handle::<approve_or_timeout>("prompt");
    assert_eq!(prompt.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), "approved");
    clock.advance(Duration::from_secs(3 * 3600));
    let late = rt.handle::<approve_or_timeout>("late");
    assert_eq!(late.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), "no approval");
}

// ----- sub-orchestrations -----

#[orchestration]
async fn child_work(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    if x == 0 {
        return Err(Failure::new("zero is not allowed"));
    }
    let d = ctx.call(double, x).await?;
    Ok(d)
}

#[orchestration]
async fn parent(ctx: Ctx, xs: Vec<u64>) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    for x in xs {
        let r = ctx.child(child_work, x).await;
        out.push(match r {
            Ok(v) => format!("ok {v}"),
            Err(ChildError::Failed(e)) => format!("failed: {e}"),
            Err(e) => format!("other: {e}"),
        });
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_failure_reaches_the_parent_as_err() {
    let db = fresh_db("children");
    let b = || Runtime::builder(&db).orchestration(parent).orchestration(child_work);
    let rt = open(b).await;
    rt.start(parent, "parent", vec![3, 0, 5]).await.unwrap();
    let rt = restart(rt, b).await;
    let out =
        rt.handle::<parent>("parent").wait_timeout(Duration::from_secs(20)).await.unwrap().unwrap();
    assert_eq!(out, ["ok 6", "failed: zero is not allowed", "ok 10"]);
    let child = rt.status("~parent:1").unwrap().unwrap();
    assert_eq!(child.parent.as_deref(), Some("parent"));
    assert_eq!(child.state, InstanceState::Completed);
}

#[orchestration]
async fn sleepy_child(ctx: Ctx, _x: u64) -> Result<(), Failure> {
    ctx.sleep(Duration::from_secs(3600)).await;
    Ok(())
}

#[orchestration]
async fn sleepy_parent(ctx: Ctx, _x: u64) -> Result<(), Failure> {
    ctx.child(sleepy_child, 1).with_id("the-child").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_parent_cancels_its_children_during_a_timer() {
    let db = fresh_db("cancel-children");
    let clock = manual_clock();
    let b = || {
        Runtime::builder(&db)
            .orchestration(sleepy_parent)
            .orchestration(sleepy_child)
            .clock(clock.clone())
    };
    let rt = open(b).await;
    rt.start(sleepy_parent, "p", 0).await.unwrap();
    eventually("child sleeping", || pending_of(&rt, "the-child").as_deref() == Some("timer")).await;
    let rt = restart(rt, b).await;
    rt.cancel("p", "no longer needed").await.unwrap();
    match rt.handle::<sleepy_parent>("p").wait_timeout(Duration::from_secs(10)).await.unwrap() {
        Err(InstanceError::Cancelled(reason)) => assert_eq!(reason, "no longer needed"),
        other => panic!("{other:?}"),
    }
    eventually("child cancelled", || {
        matches!(rt.status("the-child").unwrap().unwrap().state, InstanceState::Cancelled { .. })
    })
    .await;
    assert!(matches!(rt.cancel("p", "again").await, Err(ClientError::Finished { .. })));
}

// ----- fan-out / fan-in and race -----

#[orchestration]
async fn fan(ctx: Ctx, n: u64) -> Result<(Vec<u64>, u64, String), Failure> {
    let calls: Vec<Call<slow_double>> =
        (1..=n).map(|i| ctx.call(slow_double, (i, 5 * i))).collect();
    let doubled: Result<Vec<u64>, _> = ctx.join(calls).await.into_iter().collect();
    let doubled = doubled?;
    // Mixed kinds: an activity, a timer and an event, all at once.
    let mixed = vec![
        ctx.call(double, 21).into_any(),
        ctx.sleep(Duration::from_millis(1)).into_any(),
        ctx.wait_event::<String>("go").into_any(),
    ];
    let mut results: Vec<AnyOutput> = ctx.join(mixed).await;
    let word = results.pop().unwrap().get::<WaitEvent<String>>()??;
    results.pop().unwrap().get::<Sleep>()?;
    let answer = results.pop().unwrap().get::<Call<double>>()??;
    // Race: an event against a long timer; the event wins.
    let winner =
        ctx.race2(ctx.wait_event::<u64>("fast"), ctx.sleep(Duration::from_secs(86_400))).await;
    let tag = match winner {
        Either::Left(v) => format!("event {}", v?),
        Either::Right(()) => "timer".into(),
    };
    Ok((doubled, answer, format!("{word} {tag}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_over_mixed_kinds_and_race() {
    let db = fresh_db("fan");
    let b = || Runtime::builder(&db).orchestration(fan);
    let rt = open(b).await;
    rt.start(fan, "fan", 4).await.unwrap();
    eventually("join done", || pending_of(&rt, "fan").as_deref() == Some("join of 3")).await;
    let rt = restart(rt, b).await;
    rt.raise_event("fan", "go", &"go".to_string()).await.unwrap();
    eventually("racing", || pending_of(&rt, "fan").as_deref() == Some("race of 2")).await;
    rt.raise_event("fan", "fast", &9u64).await.unwrap();
    let out = rt.handle::<fan>("fan").wait_timeout(Duration::from_secs(20)).await.unwrap().unwrap();
    assert_eq!(out, (vec![2, 4, 6, 8], 42, "go event 9".to_string()));
    // The first join had finished before the restart: none of its branches ran again.
    for (key, n) in executions("fan").into_iter().filter(|(k, _)| k.starts_with("slow_double")) {
        assert_eq!(n, 1, "{key} ran {n} times");
    }
}

#[orchestration]
async fn wide(ctx: Ctx, ms: Vec<u64>) -> Result<u64, Failure> {
    let calls: Vec<_> =
        ms.iter().enumerate().map(|(i, m)| ctx.call(slow_double, (i as u64, *m))).collect();
    let mut sum = 0;
    for r in ctx.join(calls).await {
        sum += r?;
    }
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_branches_of_a_join_are_not_run_again_after_a_restart() {
    let db = fresh_db("join-restart");
    let b = || Runtime::builder(&db).orchestration(wide);
    let rt = open(b).await;
    // Branches 0-2 finish at once, branch 3 takes long.
    rt.start(wide, "wide", vec![0, 0, 0, 60_000]).await.unwrap();
    eventually("three branches recorded", || executions("wide").len() == 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rt = restart(rt, || Runtime::builder(&db).orchestration(wide)).await;
    // The slow branch runs again (it was in flight); the others do not.
    eventually("slow branch restarted", || executions("wide").values().any(|n| *n == 2)).await;
    let again: Vec<_> = executions("wide").into_iter().filter(|(_, n)| *n > 1).collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].0.ends_with(".3"), "{again:?}");
    rt.shutdown().await;
    let _ = b;
}

// ----- retries -----

#[orchestration]
async fn retrying(ctx: Ctx, fails: u32) -> Result<String, Failure> {
    let policy = RetryPolicy {
        initial_backoff: Duration::from_secs(10),
        backoff_factor: 2,
        max_backoff: Duration::from_secs(15),
        ..RetryPolicy::attempts(3)
    };
    match ctx.call(flaky, fails).with_retry(policy).await {
        Ok(attempt) => Ok(format!("succeeded on attempt {attempt}")),
        Err(ActivityError::Failed(e)) => Ok(format!("gave up: {e}")),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_survive_a_restart_and_are_exhausted_then_handled() {
    let db = fresh_db("retries");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(retrying).clock(clock.clone());
    let rt = open(b).await;
    rt.start(retrying, "ok-on-3", 2).await.unwrap();
    rt.start(retrying, "never", 5).await.unwrap();
    eventually("first attempts failed", || {
        executions("ok-on-3").len() == 1 && executions("never").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Restarting does not reset the attempt count or skip the 10 s backoff.
    let rt = restart(rt, b).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(executions("never").values().sum::<u64>(), 1, "retried before the backoff");
    clock.advance(Duration::from_secs(10));
    eventually("second attempt", || executions("never").values().sum::<u64>() == 2).await;
    // Let the second failure be recorded (its backoff counts from then), then pass it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    clock.advance(Duration::from_secs(15));
    let ok = rt
        .handle::<retrying>("ok-on-3")
        .wait_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok, "succeeded on attempt 3");
    let never = rt
        .handle::<retrying>("never")
        .wait_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(never, "gave up: attempt 3 failed");
    assert_eq!(executions("never").values().sum::<u64>(), 3, "exactly max_attempts attempts");
}

// ----- recorded values, custom status, continue-as-new, suspend -----

#[orchestration]
async fn countdown(ctx: Ctx, n: u32, trail: Vec<String>) -> Result<Vec<String>, Failure> {
    let id = ctx.uuid();
    let mut trail = trail;
    ctx.set_status(&format!("at {n}"));
    let _ = ctx.call(double, u64::from(n)).await?;
    trail.push(format!("{n}:{}", id.len()));
    if n == 0 {
        return Ok(trail);
    }
    return ctx.continue_as_new(countdown, (n - 1, trail)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_custom_status_and_recorded_uuid() {
    let db = fresh_db("countdown");
    let b = || Runtime::builder(&db).orchestration(countdown);
    let rt = open(b).await;
    let h = rt.start(countdown, "count", (3, Vec::new())).await.unwrap();
    let out = h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(out, ["3:36", "2:36", "1:36", "0:36"]);
    let status = rt.status("count").unwrap().unwrap();
    assert_eq!(status.custom_status::<String>().unwrap().unwrap(), "at 0");
    assert_eq!(status.steps, 8);
}

#[orchestration]
async fn two_steps(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(double, x).await?;
    ctx.sleep(Duration::from_millis(1)).await;
    let b = ctx.call(double, a).await?;
    Ok(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_holds_an_instance_until_resumed() {
    let db = fresh_db("suspend");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(two_steps).clock(clock.clone());
    let rt = open(b).await;
    rt.start(two_steps, "held", 5).await.unwrap();
    eventually("at the timer", || pending_of(&rt, "held").as_deref() == Some("timer")).await;
    rt.suspend("held").await.unwrap();
    assert_eq!(rt.status("held").unwrap().unwrap().state, InstanceState::Suspended);
    clock.advance(Duration::from_secs(1));
    let rt = restart(rt, b).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rt.status("held").unwrap().unwrap().state, InstanceState::Suspended);
    assert_eq!(pending_of(&rt, "held").as_deref(), Some("timer"));
    rt.resume("held").await.unwrap();
    let out = rt
        .handle::<two_steps>("held")
        .wait_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, 20);
}

// ----- the client -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_start_is_idempotent_lists_and_purges() {
    let db = fresh_db("client");
    let clock = manual_clock();
    let b =
        || Runtime::builder(&db).orchestration(two_steps).orchestration(nap).clock(clock.clone());
    let rt = open(b).await;
    for i in 0..5 {
        rt.start(two_steps, format!("c{i}"), i).await.unwrap();
    }
    // Duplicate start: the same instance, no second run.
    rt.start(two_steps, "c0", 99).await.unwrap();
    // The same id for another orchestration: an error.
    assert!(matches!(rt.start(nap, "c1", 1).await, Err(durable::StartError::Conflict { .. })));
    rt.start(nap, "n0", 1).await.unwrap();
    eventually("all parked", || {
        (0..5).all(|i| pending_of(&rt, &format!("c{i}")).as_deref() == Some("timer"))
    })
    .await;
    // Purging a running instance is an error.
    assert!(matches!(rt.purge("c0").await, Err(ClientError::Running(_))));
    clock.advance(Duration::from_secs(1));
    for i in 0..5 {
        let out = rt
            .handle::<two_steps>(format!("c{i}"))
            .wait_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, i * 4);
    }
    let completed = ListFilter {
        states: Some(vec![InstanceState::Completed]),
        orchestration: Some("two_steps".into()),
        limit: Some(2),
        ..ListFilter::default()
    };
    let page1 = rt.list(&completed).unwrap();
    assert_eq!(page1.instances.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["c0", "c1"]);
    let page2 = rt.list(&ListFilter { after: page1.next, ..completed.clone() }).unwrap();
    assert_eq!(page2.instances.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["c2", "c3"]);
    let running = rt
        .list(&ListFilter { states: Some(vec![InstanceState::Running]), ..ListFilter::default() })
        .unwrap();
    assert_eq!(running.instances.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["n0"]);
    rt.purge("c0").await.unwrap();
    assert!(rt.status("c0").unwrap().is_none());
    assert!(matches!(rt.purge("c0").await, Err(ClientError::NotFound(_))));
    // Waiting with a timeout on a sleeping instance gives up.
    assert!(rt.handle::<nap>("n0").wait_timeout(Duration::from_millis(50)).await.is_none());
}

/// Refuses for good: a validation error no retry can fix.
#[activity]
async fn validate(ctx: ActivityContext, amount: i64) -> Result<i64, String> {
    activity_body(&ctx).await;
    if amount < 0 {
        ctx.do_not_retry();
        return Err(format!("{amount} is not a valid amount"));
    }
    Ok(amount)
}

#[orchestration]
async fn validated(ctx: Ctx, amount: i64) -> Result<String, Failure> {
    match ctx.call(validate, amount).with_retry(RetryPolicy::attempts(5)).await {
        Ok(v) => Ok(format!("valid {v}")),
        Err(ActivityError::Failed(e)) => Ok(format!("invalid: {e}")),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_classified_as_not_retryable_fail_at_once() {
    let db = fresh_db("not-retryable");
    let rt = open(|| Runtime::builder(&db).orchestration(validated)).await;
    let h = rt.start(validated, "invalid", -3).await.unwrap();
    assert_eq!(
        h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(),
        "invalid: -3 is not a valid amount"
    );
    assert_eq!(executions("invalid").values().sum::<u64>(), 1, "no retry after a permanent error");
}

// ----- scheduled start -----

/// Returns the time its first step ran (seconds) and `x` doubled by an activity.
#[orchestration]
async fn stamped(ctx: Ctx, x: u64) -> Result<(u64, u64), Failure> {
    let began = ctx.now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let d = ctx.call(double, x).await?;
    Ok((began, d))
}

fn scheduled_at(rt: &Runtime, id: &str) -> Option<std::time::SystemTime> {
    match rt.status(id).unwrap()?.state {
        InstanceState::Scheduled { at } => Some(at),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_start_exists_at_once_and_begins_at_its_time_across_a_restart() {
    let db = fresh_db("start-at");
    let clock = manual_clock();
    let t0 = clock.now();
    let at = t0 + Duration::from_secs(3600);
    let b = || Runtime::builder(&db).orchestration(stamped).clock(clock.clone());
    let rt = open(b).await;
    let h = rt.start_at(stamped, "later", 21, at).await.unwrap();
    assert_eq!(scheduled_at(&rt, "later"), Some(at));
    let status = h.status().unwrap().unwrap();
    assert_eq!((status.steps, status.point), (0, None));
    let filter = ListFilter {
        states: Some(vec![InstanceState::Scheduled { at: UNIX_EPOCH }]),
        ..ListFilter::default()
    };
    let listed: Vec<String> =
        rt.list(&filter).unwrap().instances.into_iter().map(|s| s.id).collect();
    assert_eq!(listed, ["later"]);
    // Idempotent: the first start wins, its start time included.
    rt.start_at(stamped, "later", 1, t0 + Duration::from_secs(60)).await.unwrap();
    rt.start(stamped, "later", 1).await.unwrap();
    assert_eq!(scheduled_at(&rt, "later"), Some(at));
    drop(h);

    let rt = restart(rt, b).await;
    clock.advance(Duration::from_secs(3599));
    assert!(rt.handle::<stamped>("later").wait_timeout(Duration::from_millis(100)).await.is_none());
    assert_eq!(scheduled_at(&rt, "later"), Some(at), "began early");
    assert!(executions("later").is_empty());
    clock.advance(Duration::from_secs(1));
    let (began, doubled) =
        rt.handle::<stamped>("later").wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
    assert!(began >= 1_700_003_600, "its clock read {began}, before its start time");
    assert_eq!(doubled, 42, "the first start's input");
    assert_eq!(scheduled_at(&rt, "later"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_instance_cancelled_before_its_time_never_runs() {
    let db = fresh_db("start-at-cancel");
    let clock = manual_clock();
    let at = clock.now() + Duration::from_secs(600);
    let b = || Runtime::builder(&db).orchestration(stamped).clock(clock.clone());
    let rt = open(b).await;
    rt.start_at(stamped, "kept", 1, at).await.unwrap();
    rt.start_at(stamped, "dropped", 2, at).await.unwrap();
    let rt = restart(rt, b).await;
    rt.cancel("dropped", "not needed").await.unwrap();
    match rt.handle::<stamped>("dropped").wait_timeout(Duration::from_secs(10)).await.unwrap() {
        Err(InstanceError::Cancelled(reason)) => assert_eq!(reason, "not needed"),
        other => panic!("{other:?}"),
    }
    clock.advance(Duration::from_secs(3600));
    // The instance scheduled beside it begins; the cancelled one does not.
    let kept =
        rt.handle::<stamped>("kept").wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(kept.1, 2);
    let rt = restart(rt, b).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = rt.status("dropped").unwrap().unwrap();
    assert!(matches!(status.state, InstanceState::Cancelled { .. }), "{:?}", status.state);
    assert_eq!(status.steps, 0, "no step of it ran");
    assert!(executions("dropped").is_empty(), "its activity never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_time_that_passed_while_down_begins_on_open() {
    let db = fresh_db("start-at-down");
    let clock = manual_clock();
    let at = clock.now() + Duration::from_secs(600);
    let b = || Runtime::builder(&db).orchestration(stamped).clock(clock.clone());
    let rt = open(b).await;
    rt.start_at(stamped, "missed", 5, at).await.unwrap();
    rt.shutdown().await;
    drop(rt);
    clock.advance(Duration::from_secs(7200));
    let rt = open(b).await;
    let (began, doubled) = rt
        .handle::<stamped>("missed")
        .wait_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((began, doubled), (1_700_007_200, 10), "begins when the runtime opens");
    // A start time already past begins at once.
    let h = rt.start_at(stamped, "past", 3, UNIX_EPOCH).await.unwrap();
    assert_eq!(h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), (1_700_007_200, 6));
}

// ----- signal-with-start -----

/// Adds the payloads of `n` events `add` to `x`.
#[orchestration]
async fn adder(ctx: Ctx, start: (i64, u32)) -> Result<i64, Failure> {
    let (mut x, n) = start;
    for _ in 0..n {
        let add: i64 = ctx.wait_event("add").await?;
        x += add;
    }
    Ok(x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_with_start_starts_a_missing_instance_or_signals_the_running_one() {
    let db = fresh_db("signal-with-start");
    let b = || Runtime::builder(&db).orchestration(adder);
    let rt = open(b).await;
    // No such instance: started with its input, and the event delivered.
    let fresh = rt.signal_with_start(adder, "fresh", (1, 1), "add", &42i64).await.unwrap();
    assert_eq!(fresh.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 43);
    drop(fresh);
    // A running instance gets the event; the input given is not used.
    let h = rt.start(adder, "existing", (-2, 1)).await.unwrap();
    parked(&h, Parked::Event("add".into())).await;
    drop(h);
    let rt = restart(rt, b).await;
    let h = rt.signal_with_start(adder, "existing", (1000, 1), "add", &42i64).await.unwrap();
    assert_eq!(h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 40);
    // A finished instance is not started again.
    match rt.signal_with_start(adder, "existing", (0, 1), "add", &1i64).await {
        Err(SignalWithStartError::Event(ClientError::Finished { .. })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(h.wait().await.unwrap(), 40);
    assert_eq!(rt.status("existing").unwrap().unwrap().buffered_events, 0, "nothing was stored");
    // An id held by another orchestration is refused.
    rt.start(nap, "a-nap", 1).await.unwrap();
    match rt.signal_with_start(adder, "a-nap", (0, 1), "add", &1i64).await {
        Err(SignalWithStartError::Start(StartError::Conflict { .. })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(rt.status("a-nap").unwrap().unwrap().buffered_events, 0);
}

/// Takes an `add` event only if it is buffered when its first step runs.
#[orchestration]
async fn impatient(ctx: Ctx, x: i64) -> Result<Option<i64>, Failure> {
    match ctx.wait_event::<i64>("add").timeout(Duration::ZERO).await {
        Ok(add) => Ok(Some(x + add)),
        Err(EventError::TimedOut { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_of_a_signal_with_start_is_there_before_the_first_step() {
    let db = fresh_db("signal-with-start-first");
    // Events raised after a start arrive late: the first step would not find them.
    let store = std::sync::Arc::new(SlowInbox {
        inner: durable::store::SledStore::open(&db).unwrap(),
        delay: Duration::from_millis(300),
    });
    let rt = open(|| Runtime::builder(&db).store(store.clone()).orchestration(impatient)).await;
    rt.start(impatient, "raised-later", 1).await.unwrap();
    rt.raise_event("raised-later", "add", &42i64).await.unwrap();
    let h = rt.handle::<impatient>("raised-later");
    assert_eq!(h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), None);
    for round in 0..5 {
        let id = format!("impatient-{round}");
        let h = rt.signal_with_start(impatient, id, 1, "add", &42i64).await.unwrap();
        assert_eq!(h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), Some(43));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signal_with_starts_start_one_instance_and_deliver_every_event() {
    let db = fresh_db("signal-with-start-race");
    let b = || Runtime::builder(&db).orchestration(adder);
    let rt = open(b).await;
    for round in 0..20 {
        let id = format!("race-{round}");
        let (a, c) = tokio::join!(
            rt.signal_with_start(adder, id.clone(), (100, 3), "add", &1i64),
            rt.signal_with_start(adder, id.clone(), (200, 3), "add", &2i64),
        );
        a.unwrap();
        c.unwrap();
    }
    // Both events of every round were delivered, to one instance each, started once.
    let rt = restart(rt, b).await;
    for round in 0..20 {
        let id = format!("race-{round}");
        let h = rt.signal_with_start(adder, id.clone(), (0, 3), "add", &10i64).await.unwrap();
        let out = h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
        assert!(out == 113 || out == 213, "{id}: {out}");
    }
    let filter = ListFilter { orchestration: Some("adder".into()), ..ListFilter::default() };
    assert_eq!(rt.list(&filter).unwrap().instances.len(), 20);
}

// ----- cancel and purge scope -----

/// Sleeps an hour at depth 0; above, runs itself one level deeper as a sub-orchestration.
#[orchestration]
async fn chain(ctx: Ctx, depth: u32) -> Result<u32, Failure> {
    if depth == 0 {
        ctx.sleep(Duration::from_secs(3600)).await;
        return Ok(0);
    }
    let below = ctx.child(chain, depth - 1).await?;
    Ok(below + 1)
}

fn state_of(rt: &Runtime, id: &str) -> Option<InstanceState> {
    rt.status(id).unwrap().map(|s| s.state)
}

/// The ids of `root`'s chain, top down, once its deepest instance sleeps.
async fn parked_chain(rt: &Runtime, root: &str, depth: u32) -> Vec<String> {
    let mut ids = vec![root.to_owned()];
    for _ in 0..depth {
        let parent = ids.last().unwrap().clone();
        parked(&rt.handle::<chain>(parent.clone()), Parked::Child).await;
        let mut child = rt.children(&parent).unwrap();
        assert_eq!(child.len(), 1, "{parent}: {child:?}");
        ids.push(child.remove(0));
    }
    parked(&rt.handle::<chain>(ids.last().unwrap().clone()), Parked::Timer).await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_takes_the_whole_tree_or_the_instance_alone() {
    let db = fresh_db("cancel-scope");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(chain).clock(clock.clone());
    let rt = open(b).await;
    rt.start(chain, "tree", 2).await.unwrap();
    rt.start(chain, "alone", 2).await.unwrap();
    let tree = parked_chain(&rt, "tree", 2).await;
    let alone = parked_chain(&rt, "alone", 2).await;
    let rt = restart(rt, b).await;

    // Recursive: every depth ends cancelled.
    rt.cancel_with("tree", "all of it", Scope::Tree).await.unwrap();
    for id in &tree {
        eventually("cancelled", || {
            matches!(state_of(&rt, id), Some(InstanceState::Cancelled { .. }))
        })
        .await;
    }
    // Alone: the instance ends, its child and grandchild run on to their end. Asked through a
    // runtime that runs nothing, so both requests are recorded before either is applied: the
    // first wins, its scope included.
    let rt = restart(rt, || b().worker(false)).await;
    rt.cancel_with("alone", "just the top", Scope::Instance).await.unwrap();
    rt.cancel_with("alone", "just the top", Scope::Tree).await.unwrap();
    let rt = restart(rt, b).await;
    match rt.handle::<chain>("alone").wait_timeout(Duration::from_secs(10)).await.unwrap() {
        Err(InstanceError::Cancelled(reason)) => assert_eq!(reason, "just the top"),
        other => panic!("{other:?}"),
    }
    let rt = restart(rt, b).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state_of(&rt, &alone[1]), Some(InstanceState::Running));
    assert_eq!(pending_of(&rt, &alone[2]).as_deref(), Some("timer"));
    clock.advance(Duration::from_secs(3600));
    let out = rt.handle::<chain>(alone[1].clone()).wait_timeout(Duration::from_secs(10)).await;
    assert_eq!(out.unwrap().unwrap(), 1, "the child finished on its own");
    assert_eq!(state_of(&rt, &alone[2]), Some(InstanceState::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_refuses_a_parent_with_running_children_unless_recursive() {
    let db = fresh_db("purge-scope");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(chain).clock(clock.clone());
    let rt = open(b).await;
    rt.start(chain, "top", 2).await.unwrap();
    let ids = parked_chain(&rt, "top", 2).await;
    rt.cancel_with("top", "stop the top", Scope::Instance).await.unwrap();
    let h = rt.handle::<chain>("top");
    assert!(matches!(h.wait_timeout(Duration::from_secs(10)).await, Some(Err(_))));
    match rt.purge("top").await {
        Err(e @ ClientError::ChildrenRunning { .. }) => {
            let ClientError::ChildrenRunning { children, .. } = &e else { unreachable!() };
            assert_eq!(children, &[ids[1].clone()]);
            assert!(e.to_string().contains("Scope::Tree"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(rt.status("top").unwrap().is_some(), "nothing was purged");
    drop(h);
    let rt = restart(rt, b).await;
    // Recursive: the running descendants are cancelled, then everything is deleted.
    rt.purge_with("top", Scope::Tree).await.unwrap();
    for id in &ids {
        assert!(rt.status(id).unwrap().is_none(), "{id} still stored");
    }

    // A finished tree: alone, the children stay stored; recursively, they go too.
    rt.start(chain, "done-a", 1).await.unwrap();
    rt.start(chain, "done-b", 1).await.unwrap();
    let a = parked_chain(&rt, "done-a", 1).await;
    let b_ids = parked_chain(&rt, "done-b", 1).await;
    clock.advance(Duration::from_secs(3600));
    for root in ["done-a", "done-b"] {
        let out = rt.handle::<chain>(root).wait_timeout(Duration::from_secs(10)).await;
        assert_eq!(out.unwrap().unwrap(), 1);
    }
    rt.purge("done-a").await.unwrap();
    assert!(rt.status("done-a").unwrap().is_none());
    assert_eq!(state_of(&rt, &a[1]), Some(InstanceState::Completed), "a child purged alone stays");
    rt.purge_with("done-b", Scope::Tree).await.unwrap();
    assert!(b_ids.iter().all(|id| rt.status(id).unwrap().is_none()));
    // A running instance is refused either way.
    rt.start(chain, "live", 0).await.unwrap();
    assert!(matches!(rt.purge_with("live", Scope::Tree).await, Err(ClientError::Running(_))));
}

/// A suspended parent `top` (depth 1) whose child has completed and not been taken yet.
async fn finished_child_of_a_suspended_parent(rt: &Runtime, clock: &Clock, top: &str) -> String {
    rt.start(chain, top, 1).await.unwrap();
    let ids = parked_chain(rt, top, 1).await;
    rt.suspend(top).await.unwrap();
    eventually("suspended", || state_of(rt, top) == Some(InstanceState::Suspended)).await;
    clock.advance(Duration::from_secs(3600));
    let child = ids[1].clone();
    eventually("child completed", || state_of(rt, &child) == Some(InstanceState::Completed)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(state_of(rt, top), Some(InstanceState::Suspended), "the parent took nothing yet");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_refuses_a_child_whose_parent_has_not_taken_its_result() {
    let db = fresh_db("purge-child-waited-for");
    let clock = manual_clock();
    let store = Arc::new(SledStore::open(&db).unwrap());
    let rt = Runtime::builder(&db)
        .store(store.clone())
        .orchestration(chain)
        .clock(clock.clone())
        .open()
        .await
        .unwrap();
    let child = finished_child_of_a_suspended_parent(&rt, &clock, "waits").await;
    for scope in [Scope::Instance, Scope::Tree] {
        match rt.purge_with(&child, scope).await {
            Err(e @ ClientError::ParentWaiting { .. }) => {
                assert!(e.to_string().contains("`waits`"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
    rt.resume("waits").await.unwrap();
    let out = rt.handle::<chain>("waits").wait_timeout(Duration::from_secs(10)).await;
    assert_eq!(out.unwrap().unwrap(), 1, "the parent took the child's result");
    rt.purge(&child).await.unwrap();
    assert!(rt.status(&child).unwrap().is_none(), "taken, the child can go");

    // A child record deleted behind the runtime's back fails the parent's call, saying so,
    // rather than leaving it waiting for ever.
    let child = finished_child_of_a_suspended_parent(&rt, &clock, "robbed").await;
    let version = store.read(&child).unwrap().unwrap().version;
    store.remove(&child, version).unwrap();
    rt.resume("robbed").await.unwrap();
    match rt.handle::<chain>("robbed").wait_timeout(Duration::from_secs(10)).await.unwrap() {
        Err(InstanceError::Failed { message, .. }) => {
            assert!(message.contains("is gone"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(rt.status(&child).unwrap().is_none(), "not started again");
    rt.shutdown().await;
}

// ----- waiting until parked -----

/// Sleeps a minute `n` times, then waits for event `go`; returns the minutes slept.
#[orchestration]
async fn ticker(ctx: Ctx, n: u32) -> Result<u64, Failure> {
    let start = ctx.now();
    for _ in 0..n {
        ctx.sleep(Duration::from_secs(60)).await;
    }
    let _: bool = ctx.wait_event("go").await?;
    Ok(ctx.now().duration_since(start).unwrap_or_default().as_secs() / 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_waits_until_an_instance_is_parked_then_advances_the_clock() {
    let db = fresh_db("parked");
    let clock = manual_clock();
    let b = || Runtime::builder(&db).orchestration(ticker).clock(clock.clone());
    let rt = open(b).await;
    let h = rt.start(ticker, "ticks", 6).await.unwrap();
    // Each minute is advanced only once the instance sleeps: none is lost, none fires early.
    for _ in 0..3 {
        let status = parked(&h, Parked::Timer).await;
        assert_eq!(status.pending.as_deref(), Some("timer"));
        clock.advance(Duration::from_secs(60));
    }
    drop(h);
    let rt = restart(rt, b).await;
    let h = rt.handle::<ticker>("ticks");
    for _ in 0..3 {
        parked(&h, Parked::Timer).await;
        clock.advance(Duration::from_secs(60));
    }
    // Parked at the event now, not at a timer nor a child.
    let status = parked(&h, Parked::Event("go".into())).await;
    assert_eq!(status.pending.as_deref(), Some("event `go`"));
    parked(&h, Parked::Any).await;
    let not_there = tokio::time::timeout(Duration::from_millis(100), h.parked(Parked::Child));
    assert!(not_there.await.is_err(), "it is not waiting for a child");
    rt.raise_event("ticks", "go", &true).await.unwrap();
    assert_eq!(h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 6);
    // A finished instance is parked nowhere; an unknown one is an error.
    assert!(matches!(h.parked(Parked::Any).await, Err(ClientError::Finished { .. })));
    let unknown = rt.handle::<ticker>("no-such").parked(Parked::Timer).await;
    assert!(matches!(unknown, Err(ClientError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_sees_children_and_retry_backoffs() {
    let db = fresh_db("parked-kinds");
    let clock = manual_clock();
    let b =
        || Runtime::builder(&db).orchestration(chain).orchestration(retrying).clock(clock.clone());
    let rt = open(b).await;
    let parent = rt.start(chain, "parked-parent", 1).await.unwrap();
    parked(&parent, Parked::Child).await;
    let backing_off = rt.start(retrying, "parked-retry", 2).await.unwrap();
    parked(&backing_off, Parked::Backoff).await;
    drop((parent, backing_off));
    let rt = restart(rt, b).await;
    let child = rt.children("parked-parent").unwrap().remove(0);
    parked(&rt.handle::<chain>(child), Parked::Timer).await;
    parked(&rt.handle::<retrying>("parked-retry"), Parked::Backoff).await;
}
