//! The client: what `cancel`, `suspend`, `wait` and the instance states promise.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::time::{Duration, UNIX_EPOCH};

use durable::{
    ActivityContext, ActivityError, Clock, Ctx, Failure, InstanceError, InstanceState, Runtime,
    activity, orchestration,
};
use support::harness::{fresh_db, open};

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

fn pending_of(rt: &Runtime, id: &str) -> Option<String> {
    rt.status(id).unwrap().and_then(|s| s.pending)
}

/// Waits an hour on the runtime's clock, then returns its input.
#[orchestration]
async fn hour(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    ctx.sleep(Duration::from_secs(3600)).await;
    Ok(x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_instance_is_terminal() {
    let db = fresh_db("client-cancelled-terminal");
    let clock = manual_clock();
    let rt = open(|| Runtime::builder(&db).orchestration(hour).clock(clock.clone())).await;
    rt.start(hour, "c", 1).await.unwrap();
    eventually("at the timer", || pending_of(&rt, "c").as_deref() == Some("timer")).await;
    rt.cancel("c", "stop").await.unwrap();
    // A client's `while !state.is_terminal()` loop ends.
    eventually("terminal", || rt.status("c").unwrap().unwrap().state.is_terminal()).await;
    assert_eq!(
        rt.status("c").unwrap().unwrap().state,
        InstanceState::Cancelled { reason: "stop".into() }
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_cancel_wins_and_later_ones_are_refused() {
    let db = fresh_db("client-first-cancel");
    let clock = manual_clock();
    let rt = open(|| Runtime::builder(&db).orchestration(hour).clock(clock.clone())).await;
    rt.start(hour, "c5", 1).await.unwrap();
    eventually("at the timer", || pending_of(&rt, "c5").as_deref() == Some("timer")).await;
    // Suspended, so that no driver applies a cancellation between the calls.
    rt.suspend("c5").await.unwrap();
    let mut results = Vec::new();
    for n in 0..5 {
        results.push(rt.cancel("c5", &format!("reason {n}")).await);
    }
    assert!(results[0].is_ok(), "{results:?}");
    for r in &results[1..] {
        let e = r.as_ref().expect_err("a later cancel must be refused").to_string();
        assert!(e.contains("reason 0"), "the error names the first reason: {e}");
    }
    // The same reason again is an idempotent retry of the first call.
    let _ = rt.cancel("c5", "reason 0").await;
    let _ = rt.resume("c5").await;
    let err = rt
        .handle::<hour>("c5")
        .wait_timeout(Duration::from_secs(10))
        .await
        .expect("cancelled in time")
        .unwrap_err();
    assert!(matches!(&err, InstanceError::Cancelled(r) if r == "reason 0"), "{err}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_suspended_instance_takes_effect_at_once() {
    let db = fresh_db("client-cancel-suspended");
    let clock = manual_clock();
    let rt = open(|| Runtime::builder(&db).orchestration(hour).clock(clock.clone())).await;
    rt.start(hour, "s", 1).await.unwrap();
    eventually("at the timer", || pending_of(&rt, "s").as_deref() == Some("timer")).await;
    rt.suspend("s").await.unwrap();
    assert_eq!(rt.status("s").unwrap().unwrap().state, InstanceState::Suspended);
    rt.cancel("s", "not wanted").await.unwrap();
    // No resume.
    let err = rt
        .handle::<hour>("s")
        .wait_timeout(Duration::from_secs(10))
        .await
        .expect("a suspended instance is cancelled without a resume")
        .unwrap_err();
    assert!(matches!(&err, InstanceError::Cancelled(r) if r == "not wanted"), "{err}");
    assert_eq!(
        rt.status("s").unwrap().unwrap().state,
        InstanceState::Cancelled { reason: "not wanted".into() }
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_waits_and_refuses_new_work() {
    let db = fresh_db("client-shutdown");
    let clock = manual_clock();
    let rt = open(|| Runtime::builder(&db).orchestration(hour).clock(clock.clone())).await;
    let handle = rt.start(hour, "w", 1).await.unwrap();
    eventually("at the timer", || pending_of(&rt, "w").as_deref() == Some("timer")).await;
    let waiting = tokio::spawn(async move { handle.wait_timeout(Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    rt.shutdown().await;
    let waited = waiting.await.unwrap();
    match waited {
        Some(Err(InstanceError::Shutdown)) => {}
        other => panic!("expected a shutdown error, got {other:?}"),
    }
    // A wait that begins after the shutdown ends at once too.
    let late = rt.handle::<hour>("w").wait_timeout(Duration::from_secs(5)).await;
    assert!(matches!(late, Some(Err(InstanceError::Shutdown))), "{late:?}");

    let started = rt.start(hour, "after", 2).await;
    let e = started.expect_err("start after shutdown must be refused").to_string();
    assert!(e.contains("shut down"), "{e}");
    assert!(rt.status("after").unwrap().is_none(), "nothing was stored");
    let raised = rt.raise_event("w", "go", &1u64).await;
    let e = raised.expect_err("raise_event after shutdown must be refused").to_string();
    assert!(e.contains("shut down"), "{e}");
    assert_eq!(rt.status("w").unwrap().unwrap().buffered_events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_directory_twice_in_one_process_says_so() {
    let db = fresh_db("client-twice");
    let rt = open(|| Runtime::builder(&db)).await;
    let second = Runtime::builder(&db).open().await;
    let e = second.expect_err("the directory is held by the first runtime").to_string();
    assert!(e.contains("another open store in this one"), "{e}");
    assert!(!e.contains("in use by another process:"), "does not blame another process only: {e}");
    rt.shutdown().await;
}

/// Never returns on its own.
#[activity]
async fn stuck(_ctx: ActivityContext, _x: u64) -> Result<u64, String> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(0)
}

#[orchestration]
async fn impatient(ctx: Ctx, x: u64) -> Result<String, Failure> {
    match ctx.call(stuck, x).with_timeout(Duration::from_secs(60)).await {
        Ok(_) => Ok("returned".into()),
        Err(ActivityError::TimedOut(d)) => Ok(format!("timed out after {}s", d.as_secs())),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_timeouts_follow_the_runtime_clock() {
    let db = fresh_db("client-activity-timeout");
    let clock = manual_clock();
    let rt = open(|| Runtime::builder(&db).orchestration(impatient).clock(clock.clone())).await;
    let handle = rt.start(impatient, "t", 1).await.unwrap();
    eventually("calling", || pending_of(&rt, "t").is_some()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rt.status("t").unwrap().unwrap().state, InstanceState::Running);
    clock.advance(Duration::from_secs(61));
    let out = handle
        .wait_timeout(Duration::from_secs(10))
        .await
        .expect("the manual clock drives the attempt timeout")
        .unwrap();
    assert_eq!(out, "timed out after 60s");
    rt.shutdown().await;
}

// ----- typed event payloads -----

/// Waits for `go` as a `bool` and for `bytes` as a `Vec<u8>`; reports what each wait got.
#[orchestration]
async fn typed_waits(ctx: Ctx, _x: u64) -> Result<(String, String), Failure> {
    let flag = ctx.wait_event::<bool>("go").await;
    let bytes = ctx.wait_event::<Vec<u8>>("bytes").await;
    Ok((format!("{flag:?}"), format!("{bytes:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_raised_as_another_type_is_refused_by_name() {
    let db = fresh_db("client-typed-events");
    let rt = open(|| Runtime::builder(&db).orchestration(typed_waits)).await;
    let h = rt.start(typed_waits, "typed", 0).await.unwrap();
    rt.raise_event("typed", "go", &1u8).await.unwrap();
    rt.raise_event("typed", "bytes", &"ab".to_owned()).await.unwrap();
    let (flag, bytes) = h.wait().await.unwrap();
    assert_eq!(
        flag, "Err(WrongType { name: \"go\", sent: \"u8\", expected: \"bool\" })",
        "a 1u8 must not arrive as `true`"
    );
    assert!(bytes.contains("WrongType") && bytes.contains("alloc::string::String"), "{bytes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_raised_as_json_is_decoded_by_the_waiters_type() {
    let db = fresh_db("client-json-events");
    let rt = open(|| Runtime::builder(&db).orchestration(typed_waits)).await;
    let h = rt.start(typed_waits, "json", 0).await.unwrap();
    rt.raise_event_json("json", "go", &serde_json::json!(true)).await.unwrap();
    rt.raise_event_json("json", "bytes", &serde_json::json!([1, 2, 3])).await.unwrap();
    assert_eq!(h.wait().await.unwrap(), ("Ok(true)".to_owned(), "Ok([1, 2, 3])".to_owned()));
}

/// Counts the store's flushes.
struct CountingFlushes {
    inner: durable::store::SledStore,
    flushes: std::sync::atomic::AtomicU64,
}

impl durable::store::Layer for CountingFlushes {
    fn inner(&self) -> &dyn durable::store::Store {
        &self.inner
    }
    fn flush(&self) -> Result<(), durable::store::StoreError> {
        self.flushes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        durable::store::Store::flush(&self.inner)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_many_shares_one_flush_and_each_start_stands_alone() {
    use std::sync::atomic::Ordering;
    let db = fresh_db("start-many");
    let clock = manual_clock();
    let store = std::sync::Arc::new(CountingFlushes {
        inner: durable::store::SledStore::open(&db).unwrap(),
        flushes: 0.into(),
    });
    // A client only: no driver flushes steps meanwhile.
    let rt = Runtime::builder(&db)
        .store(store.clone())
        .clock(clock.clone())
        .worker(false)
        .open()
        .await
        .unwrap();
    rt.start(hour, "taken", 1).await.unwrap();
    #[orchestration]
    async fn other(_ctx: Ctx, x: u64) -> Result<u64, Failure> {
        Ok(x)
    }
    rt.start(other, "other-kind", 1).await.unwrap();
    let mut starts: Vec<(String, u64)> = (0..200).map(|i| (format!("many-{i:03}"), i)).collect();
    starts.push(("taken".into(), 99));
    starts.push(("bad\0id".into(), 0));
    starts.push(("other-kind".into(), 0));
    let before = store.flushes.load(Ordering::SeqCst);
    let started = rt.start_many(hour, starts).await;
    let flushes = store.flushes.load(Ordering::SeqCst) - before;
    assert!(flushes <= 2, "200 starts took {flushes} flushes");
    assert_eq!(started.len(), 203);
    for (i, s) in started[..201].iter().enumerate() {
        assert!(s.is_ok(), "start {i}: {:?}", s.as_ref().err());
    }
    assert!(
        matches!(started[201], Err(durable::StartError::InvalidId { .. })),
        "{:?}",
        started[201].as_ref().err()
    );
    assert!(
        matches!(started[202], Err(durable::StartError::Conflict { .. })),
        "{:?}",
        started[202].as_ref().err()
    );
    // Started one after another, each start waits for a flush of its own.
    let before = store.flushes.load(Ordering::SeqCst);
    for i in 0..20 {
        rt.start(hour, format!("one-{i}"), i).await.unwrap();
    }
    assert!(store.flushes.load(Ordering::SeqCst) - before >= 20, "one flush per awaited start");
    rt.shutdown().await;
    // Handles hold the runtime, and it holds the store.
    drop((started, rt, store));

    // Every acknowledged start is stored and runs after a restart; the existing one kept its
    // input.
    let rt = open(|| Runtime::builder(&db).orchestration(hour).clock(clock.clone())).await;
    for id in (0..200).map(|i| format!("many-{i:03}")).chain(["taken".into()]) {
        rt.handle::<hour>(id).parked(durable::Parked::Timer).await.unwrap();
    }
    clock.advance(Duration::from_secs(3600));
    for i in [0u64, 117, 199] {
        let out =
            rt.handle::<hour>(format!("many-{i:03}")).wait_timeout(Duration::from_secs(10)).await;
        assert_eq!(out.unwrap().unwrap(), i);
    }
    let taken = rt.handle::<hour>("taken").wait_timeout(Duration::from_secs(10)).await;
    assert_eq!(taken.unwrap().unwrap(), 1, "the first start of an id wins");
}
