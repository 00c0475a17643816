//! Hostile and careless use: huge values, deep values, squatted ids, blocking code, piles of
//! timers. Each one stalls or fails at most the instance it concerns, with a clear error, and
//! leaves nothing behind.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use durable::store::{SledStore, Space, Store};
use durable::{
    Clock, Ctx, Durability, Failure, InstanceError, InstanceState, Runtime, activity, orchestration,
};
use serde::{Deserialize, Serialize};
use support::harness::fresh_db;

#[orchestration]
async fn naps(ctx: Ctx, hours: u64) -> Result<u64, Failure> {
    ctx.sleep(Duration::from_secs(3600 * hours)).await;
    Ok(hours)
}

fn count(store: &dyn Store, space: Space) -> usize {
    let mut n = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(space, after.as_deref(), 1024).unwrap();
        let Some((last, _)) = page.last() else { return n };
        after = Some(last.clone());
        n += page.len();
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..4000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_purge_leave_no_timer_entries_behind() {
    let db = fresh_db("timer-leak");
    let store = Arc::new(SledStore::open(&db).unwrap());
    let rt = Runtime::builder(&db)
        .store(store.clone())
        .durability(Durability::Buffered)
        .orchestration(naps)
        .open()
        .await
        .unwrap();
    let n = 1000;
    for i in 0..n {
        rt.start(naps, format!("nap-{i}"), 1).await.unwrap();
    }
    wait_until("every instance sleeps", || count(store.as_ref(), Space::Timers) == n).await;
    for i in 0..n {
        rt.cancel(&format!("nap-{i}"), "not needed").await.unwrap();
    }
    wait_until("every instance is cancelled", || {
        (0..n).all(|i| {
            rt.status(&format!("nap-{i}")).unwrap().unwrap().state
                != durable::InstanceState::Running
        })
    })
    .await;
    for i in 0..n {
        rt.purge(&format!("nap-{i}")).await.unwrap();
    }
    assert_eq!(count(store.as_ref(), Space::Instances), 0);
    assert_eq!(count(store.as_ref(), Space::Timers), 0, "timer entries left behind");
    rt.shutdown().await;
}

// ----- identity -----

#[orchestration]
async fn kid(_ctx: Ctx, x: u64) -> Result<u64, Failure> {
    Ok(x * 10)
}

#[orchestration]
async fn parent(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let from_kid = ctx.child(kid, x).await?;
    Ok(from_kid + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_squat_the_id_a_parent_derives_for_its_child() {
    let db = fresh_db("squat");
    let rt = Runtime::builder(&db).orchestration(parent).open().await.unwrap();
    // `~P:1` is the id `P` derives for the child it starts at its first step: no client can
    // start it first, and `P:1` is an ordinary id that has nothing to do with `P`'s child.
    match rt.start(kid, "~P:1", 666).await {
        Err(durable::StartError::InvalidId { reason, .. }) => {
            assert!(reason.contains("reserved"), "{reason}")
        }
        other => panic!("a client took a derived id: {other:?}"),
    }
    let bystander = rt.start(kid, "P:1", 666).await.unwrap();
    assert_eq!(bystander.wait().await.unwrap(), 6660);
    let p = rt.start(parent, "P", 1).await.unwrap();
    assert_eq!(p.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 11);
    // Nor can a client take over a parent's real child, by its name.
    let q = rt.start(parent, "Q", 2).await.unwrap();
    assert_eq!(q.wait().await.unwrap(), 21);
    assert!(rt.status("~Q:1").unwrap().is_some(), "the child has the derived id");
    match rt.start(kid, "~Q:1", 2).await {
        Err(durable::StartError::InvalidId { .. }) => {}
        other => panic!("{other:?}"),
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_nul_and_overlong_ids_are_refused() {
    let db = fresh_db("bad-ids");
    let rt = Runtime::builder(&db).orchestration(kid).open().await.unwrap();
    let huge = "x".repeat(16 << 20);
    let long = "y".repeat(durable::MAX_ID_BYTES + 1);
    for (id, expect) in
        [("", "empty"), ("a\0b", "NUL"), (huge.as_str(), "at most 256"), (long.as_str(), "at most")]
    {
        match rt.start(kid, id, 1).await {
            Err(durable::StartError::InvalidId { reason, id: shown }) => {
                assert!(reason.contains(expect), "{reason}");
                assert!(shown.len() < 100, "the error does not repeat a huge id");
            }
            other => panic!("{:?}: {other:?}", &id[..id.len().min(8)]),
        }
        assert!(rt.status(id).unwrap().is_none(), "nothing stored");
    }
    let longest = "z".repeat(durable::MAX_ID_BYTES);
    assert_eq!(rt.start(kid, longest, 1).await.unwrap().wait().await.unwrap(), 10);
    rt.shutdown().await;
}

// ----- deeply nested values -----

/// A value nested as deep as one likes. Built, encoded and dropped without recursion, so only
/// decoding it (derived, recursive) is at risk.
#[derive(Deserialize, Debug)]
enum Nest {
    Leaf,
    Node(Box<Nest>),
}

fn deep(levels: usize) -> Nest {
    let mut n = Nest::Leaf;
    for _ in 0..levels {
        n = Nest::Node(Box::new(n));
    }
    n
}

impl Serialize for Nest {
    /// The bytes bincode writes for the derived form: variant index 1 per `Node`, then 0.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut levels = 0;
        let mut at = self;
        while let Nest::Node(next) = at {
            levels += 1;
            at = next;
        }
        let mut t = s.serialize_tuple(levels + 1)?;
        for _ in 0..levels {
            t.serialize_element(&1u32)?;
        }
        t.serialize_element(&0u32)?;
        t.end()
    }
}

impl Drop for Nest {
    fn drop(&mut self) {
        if let Nest::Node(inner) = self {
            let mut next = std::mem::replace(&mut **inner, Nest::Leaf);
            while let Nest::Node(inner) = &mut next {
                next = std::mem::replace(&mut **inner, Nest::Leaf);
            }
        }
    }
}

#[orchestration]
async fn takes_nest(_ctx: Ctx, nest: Nest) -> Result<bool, Failure> {
    Ok(matches!(nest, Nest::Node(_)))
}

#[activity]
async fn makes_nest(levels: u64) -> Result<Nest, String> {
    Ok(deep(usize::try_from(levels).unwrap()))
}

#[orchestration]
async fn gets_nest(ctx: Ctx, levels: u64) -> Result<bool, Failure> {
    let nest = ctx.call(makes_nest, levels).await?;
    Ok(matches!(nest, Nest::Node(_)))
}

fn assert_faulted<T: std::fmt::Debug, E: std::fmt::Debug>(
    r: Option<Result<T, InstanceError<E>>>,
    expect: &str,
) {
    match r {
        Some(Err(InstanceError::Faulted(m))) => assert!(m.contains(expect), "{m}"),
        other => panic!("expected a fault about {expect:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_input_or_activity_result_fails_its_instance_not_the_process() {
    let db = fresh_db("deep-values");
    let rt = Runtime::builder(&db)
        .orchestration(takes_nest)
        .orchestration(gets_nest)
        .orchestration(kid)
        .open()
        .await
        .unwrap();
    let input = rt.start(takes_nest, "deep-input", deep(100_000)).await.unwrap();
    let output = rt.start(gets_nest, "deep-output", 100_000).await.unwrap();
    let fine = rt.start(gets_nest, "shallow", 10).await.unwrap();
    let other = rt.start(kid, "neighbour", 4).await.unwrap();
    let wait = Duration::from_secs(20);
    assert_faulted(input.wait_timeout(wait).await, "nested more than");
    assert_faulted(output.wait_timeout(wait).await, "nested more than");
    assert!(fine.wait_timeout(wait).await.unwrap().unwrap());
    assert_eq!(other.wait_timeout(wait).await.unwrap().unwrap(), 40);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_deeply_nested_record_fails_only_its_instance() {
    let db = fresh_db("deep-record");
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let clock = Clock::manual(t0);
    let b = || Runtime::builder(&db).orchestration(naps).clock(clock.clone());
    let rt = b().open().await.unwrap();
    for id in ["good", "crafted"] {
        rt.start(naps, id, 1).await.unwrap();
    }
    wait_until("both sleep", || {
        ["good", "crafted"]
            .iter()
            .all(|id| rt.status(id).unwrap().unwrap().pending.as_deref() == Some("timer"))
    })
    .await;
    rt.shutdown().await;
    drop(rt);
    // Wrap the pending timer of `crafted` in 100,000 one-element joins.
    {
        let store = SledStore::open(&db).unwrap();
        let mut bytes = store.get(Space::Instances, b"crafted").unwrap().unwrap();
        let fire_at = 1_000_000_000 + 3_600_000u64;
        let timer = durable::__support_v1::codec::encode(&durable::__support_v1::Command::Timer {
            fire_at_ms: fire_at,
        })
        .unwrap();
        let at = bytes.windows(timer.len()).position(|w| w == timer).unwrap();
        let join_of_one = [4u8, 1]; // variant `Join`, a Vec of length 1
        let prefix: Vec<u8> = join_of_one.iter().copied().cycle().take(200_000).collect();
        bytes.splice(at..at, prefix);
        store.put(Space::Instances, b"crafted", &bytes).unwrap();
        store.flush().unwrap();
    }
    let rt = b().open().await.unwrap();
    clock.advance(Duration::from_secs(3600));
    let good = rt.handle::<naps>("good").wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(good.unwrap(), 1, "the neighbour completes");
    match rt.status("crafted").unwrap().unwrap().state {
        InstanceState::Failed { message } => {
            assert!(message.contains("nested more than"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    rt.shutdown().await;
}

// ----- blocking activities and busy steps -----

#[activity]
async fn blocks_thread(ms: u64) -> Result<u64, String> {
    std::thread::sleep(Duration::from_millis(ms));
    Ok(ms)
}

#[orchestration]
async fn calls_blocking(ctx: Ctx, ms: u64) -> Result<String, Failure> {
    let r = ctx
        .call(blocks_thread, ms)
        .with_timeout(Duration::from_millis(500))
        .with_retry(durable::RetryPolicy::attempts(1))
        .await;
    Ok(match r {
        Ok(v) => format!("ran {v}"),
        Err(durable::ActivityError::TimedOut(_)) => "timed out".into(),
        Err(e) => format!("{e}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_activities_time_out_on_time_and_stall_nobody_else() {
    let db = fresh_db("blocking-activities");
    let rt = Runtime::builder(&db)
        .orchestration(calls_blocking)
        .orchestration(kid)
        .open()
        .await
        .unwrap();
    let began = std::time::Instant::now();
    // As many blocked threads as the runtime has workers.
    let a = rt.start(calls_blocking, "block-a", 3000).await.unwrap();
    let b = rt.start(calls_blocking, "block-b", 3000).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other = rt.start(kid, "meanwhile", 7).await.unwrap();
    assert_eq!(other.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 70);
    let other_done = began.elapsed();
    for h in [a, b] {
        assert_eq!(h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), "timed out");
    }
    let timed_out = began.elapsed();
    assert!(other_done < Duration::from_millis(2500), "the other instance waited {other_done:?}");
    assert!(timed_out < Duration::from_millis(2800), "500 ms timeouts fired after {timed_out:?}");
    // The timed-out attempts still block their threads; the engine gave up on them, so
    // shutdown does not wait for them (it waits up to a second for code it stops itself).
    let shutting = std::time::Instant::now();
    rt.shutdown().await;
    assert!(
        shutting.elapsed() < Duration::from_millis(900),
        "shutdown waited {:?} for attempts that had timed out",
        shutting.elapsed()
    );
}

/// Per test (the input's `slot`): the activity began; it ran the code after its blocking part;
/// it ran the code after its `.await`.
static SLOW: [[std::sync::atomic::AtomicBool; 3]; 2] =
    [const { [const { std::sync::atomic::AtomicBool::new(false) }; 3] }; 2];

/// Code between two `.await`s that takes its time, then a side effect, then an `.await`, then
/// another one.
#[activity]
async fn slow_then_effect(slot: usize, ms: u64) -> Result<u64, String> {
    use std::sync::atomic::Ordering::SeqCst;
    SLOW[slot][0].store(true, SeqCst);
    std::thread::sleep(Duration::from_millis(ms));
    SLOW[slot][1].store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    SLOW[slot][2].store(true, SeqCst);
    Ok(ms)
}

#[orchestration]
async fn calls_slow(ctx: Ctx, slot: usize) -> Result<u64, Failure> {
    Ok(ctx.call(slow_then_effect, (slot, 300)).await?)
}

/// Shutdown waits for activity code that is running at that moment to reach its `.await`, where
/// it stops: once it returns, no activity code of the runtime runs (a runtime opened next on the
/// same database does not overlap with it). Without the wait, the effect came after the return.
async fn shutdown_waits_for_running_activity_code(slot: usize, isolate: bool) {
    use std::sync::atomic::Ordering::SeqCst;
    let db = fresh_db(&format!("shutdown-waits-for-code-{slot}"));
    let rt =
        Runtime::builder(&db).orchestration(calls_slow).isolate_code(isolate).open().await.unwrap();
    rt.start(calls_slow, "slow", slot).await.unwrap();
    wait_until("the activity runs", || SLOW[slot][0].load(SeqCst)).await;
    let began = std::time::Instant::now();
    rt.shutdown().await;
    assert!(SLOW[slot][1].load(SeqCst), "activity code ran on after shutdown returned");
    assert!(began.elapsed() < Duration::from_secs(5), "shutdown took {:?}", began.elapsed());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!SLOW[slot][2].load(SeqCst), "the activity went on past its `.await` after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_after_running_activity_code_reached_its_await() {
    shutdown_waits_for_running_activity_code(0, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_after_running_activity_code_reached_its_await_without_isolation() {
    shutdown_waits_for_running_activity_code(1, false).await;
}

static STOP_SPINNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[orchestration]
async fn spins(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    ctx.sleep(Duration::from_millis(1)).await;
    // No `.await` in here: the step computes until told to stop.
    while !STOP_SPINNING.load(std::sync::atomic::Ordering::Relaxed) {
        std::hint::spin_loop();
    }
    Ok(x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_steps_stall_only_themselves_and_cancel_and_shutdown_still_work() {
    let db = fresh_db("busy-steps");
    // Ends the spinning after 20 s whatever happens, so that a regression fails instead of
    // hanging.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(20));
        STOP_SPINNING.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let rt = Runtime::builder(&db).orchestration(spins).orchestration(kid).open().await.unwrap();
    let began = std::time::Instant::now();
    rt.start(spins, "spin-a", 1).await.unwrap();
    let b = rt.start(spins, "spin-b", 2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = rt.start(kid, "meanwhile", 3).await.unwrap();
    assert_eq!(other.wait_timeout(Duration::from_secs(30)).await.unwrap().unwrap(), 30);
    let other_done = began.elapsed();
    rt.cancel("spin-b", "enough").await.unwrap();
    match b.wait_timeout(Duration::from_secs(30)).await.unwrap() {
        Err(InstanceError::Cancelled(reason)) => assert_eq!(reason, "enough"),
        other => panic!("{other:?}"),
    }
    let cancelled = began.elapsed();
    tokio::time::timeout(Duration::from_secs(30), rt.shutdown()).await.unwrap();
    let shut = began.elapsed();
    STOP_SPINNING.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(other_done < Duration::from_secs(8), "the other instance waited {other_done:?}");
    assert!(cancelled < Duration::from_secs(10), "the cancellation took until {cancelled:?}");
    assert!(shut < Duration::from_secs(12), "shutdown returned at {shut:?}");
}

// ----- oversized values -----

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

#[orchestration]
async fn collects(ctx: Ctx, n: u64) -> Result<usize, Failure> {
    let () = ctx.wait_event("go").await?;
    let mut total = 0;
    for _ in 0..n {
        let part: String = ctx.wait_event("part").await?;
        total += part.len();
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_would_overfill_the_record_are_refused_and_nothing_is_lost() {
    let db = fresh_db("big-events");
    let rt = Runtime::builder(&db)
        .orchestration(collects)
        .max_record(MIB)
        .max_payload(400 * KIB)
        .open()
        .await
        .unwrap();
    let h = rt.start(collects, "c", 3).await.unwrap();
    // Until `go`, the events accumulate in the record.
    let part = "p".repeat(300 * KIB);
    for _ in 0..3 {
        rt.raise_event("c", "part", &part).await.unwrap();
    }
    match rt.raise_event("c", "part", &part).await {
        Err(durable::ClientError::Payload { reason, .. }) => {
            assert!(reason.contains("over the limit of 1048576 bytes"), "{reason}");
            assert!(reason.contains("buffered events"), "{reason}");
        }
        other => panic!("a fourth 300 KiB event in a 1 MiB record: {other:?}"),
    }
    let status = rt.status("c").unwrap().unwrap();
    assert_eq!(status.buffered_events, 3, "the refused event was not stored");
    rt.raise_event("c", "go", &()).await.unwrap();
    assert_eq!(h.wait_timeout(Duration::from_secs(20)).await.unwrap().unwrap(), 900 * KIB);
    rt.shutdown().await;
}

#[orchestration]
async fn sets_status(ctx: Ctx, bytes: u64) -> Result<u64, Failure> {
    ctx.set_status(&"s".repeat(usize::try_from(bytes).unwrap()));
    ctx.sleep(Duration::from_millis(1)).await;
    Ok(bytes)
}

#[orchestration]
async fn grows(ctx: Ctx, step: u64) -> Result<usize, Failure> {
    let mut blob = String::new();
    for _ in 0..20 {
        blob.push_str(&"g".repeat(usize::try_from(step).unwrap()));
        ctx.sleep(Duration::from_millis(1)).await;
    }
    Ok(blob.len())
}

#[activity]
async fn returns_bytes(n: u64) -> Result<String, String> {
    Ok("r".repeat(usize::try_from(n).unwrap()))
}

#[orchestration]
async fn fetches(ctx: Ctx, n: u64) -> Result<String, Failure> {
    let r = ctx.call(returns_bytes, n).await;
    Ok(match r {
        Ok(s) => format!("got {}", s.len()),
        Err(durable::ActivityError::Rejected(m)) => format!("rejected: {m}"),
        Err(e) => format!("other error: {e}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_would_overfill_its_record_fails_its_instance_saying_why() {
    let db = fresh_db("big-steps");
    let rt = Runtime::builder(&db)
        .orchestration(sets_status)
        .orchestration(grows)
        .orchestration(fetches)
        .orchestration(kid)
        .orchestration(collects_text)
        .max_record(MIB)
        .open()
        .await
        .unwrap();
    let wait = Duration::from_secs(20);
    // A custom status larger than the record.
    let s = rt.start(sets_status, "status", 2 * MIB as u64).await.unwrap();
    assert_faulted(s.wait_timeout(wait).await, "the custom status: 20");
    // A local that grows past the limit, named.
    let g = rt.start(grows, "grows", 100 * KIB as u64).await.unwrap();
    assert_faulted(g.wait_timeout(wait).await, "local `blob`");
    // An activity result that does not fit fails the attempt, not the instance.
    let f = rt.start(fetches, "fetch-big", 2 * MIB as u64).await.unwrap();
    let out = f.wait_timeout(wait).await.unwrap().unwrap();
    assert!(out.starts_with("rejected: ") && out.contains("does not fit"), "{out}");
    let f = rt.start(fetches, "fetch-small", 1000).await.unwrap();
    assert_eq!(f.wait_timeout(wait).await.unwrap().unwrap(), "got 1000");
    // An input larger than the record is refused, and nothing is stored.
    let too_big = "i".repeat(2 * MIB);
    match rt.start(collects_text, "big-input", too_big).await {
        Err(durable::StartError::Input { reason, .. }) => {
            assert!(reason.contains("limit"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(rt.status("big-input").unwrap().is_none());
    // Every instance that failed can still be read, and the others run.
    for id in ["status", "grows"] {
        assert!(matches!(rt.status(id).unwrap().unwrap().state, InstanceState::Failed { .. }));
    }
    assert_eq!(rt.start(kid, "after", 5).await.unwrap().wait().await.unwrap(), 50);
    rt.shutdown().await;
}

#[orchestration]
async fn collects_text(_ctx: Ctx, text: String) -> Result<usize, Failure> {
    Ok(text.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_limit_huge_inputs_and_results_are_refused_cleanly() {
    let db = fresh_db("default-limit");
    let rt = Runtime::builder(&db)
        .orchestration(fetches)
        .orchestration(collects_text)
        .max_payload(128 * MIB)
        .open()
        .await
        .unwrap();
    match rt.start(collects_text, "huge", "h".repeat(70 * MIB)).await {
        Err(durable::StartError::Input { reason, .. }) => {
            assert!(reason.contains("limit of 67108864 bytes"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(rt.status("huge").unwrap().is_none());
    let f = rt.start(fetches, "huge-result", 100 * MIB as u64).await.unwrap();
    let out = f.wait_timeout(Duration::from_secs(60)).await.unwrap().unwrap();
    assert!(out.starts_with("rejected: ") && out.contains("67108864"), "{out}");
    rt.shutdown().await;
}

// ----- without isolation -----

/// Threads steps and activity attempts ran on, in order.
static THREADS: std::sync::Mutex<Vec<(&str, std::thread::ThreadId)>> =
    std::sync::Mutex::new(Vec::new());

fn note_thread(what: &'static str) {
    THREADS.lock().unwrap().push((what, std::thread::current().id()));
}

#[activity]
async fn notes_its_thread(ms: u64) -> Result<u64, String> {
    note_thread("attempt");
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[orchestration]
async fn notes_threads(ctx: Ctx, ms: u64) -> Result<String, Failure> {
    note_thread("step");
    let quick = ctx.call(notes_its_thread, 0).await?;
    note_thread("step");
    let slow = ctx
        .call(notes_its_thread, ms)
        .with_timeout(Duration::from_millis(100))
        .with_retry(durable::RetryPolicy::attempts(1))
        .await;
    Ok(format!("{quick} {}", if slow.is_err() { "timed out" } else { "ran" }))
}

/// A current-thread runtime: its only worker is the test's own thread.
#[tokio::test]
async fn without_isolation_steps_and_attempts_run_on_the_driving_task_and_timeouts_hold() {
    let here = std::thread::current().id();
    for isolate in [true, false] {
        let db = fresh_db(&format!("isolate-{isolate}"));
        let rt = Runtime::builder(&db)
            .orchestration(notes_threads)
            .isolate_code(isolate)
            .open()
            .await
            .unwrap();
        THREADS.lock().unwrap().clear();
        let h = rt.start(notes_threads, "threads", 10_000).await.unwrap();
        let out = h.wait_timeout(Duration::from_secs(20)).await.unwrap().unwrap();
        assert_eq!(out, "0 timed out", "isolate {isolate}");
        let threads = std::mem::take(&mut *THREADS.lock().unwrap());
        assert_eq!(threads.len(), 4, "{threads:?}");
        for (what, thread) in threads {
            // Isolated, every step and attempt runs on a thread of the blocking pool.
            assert_eq!(thread == here, !isolate, "isolate {isolate}: a {what} ran on {thread:?}");
        }
        rt.shutdown().await;
    }
}
