//! Bad input and failing storage: each fault fails one instance with a clear error, or is
//! retried, and loses nothing else.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use durable::store::{Layer, SledStore, Space, Store, StoreError, Write, WriteError};
use durable::{
    ActivityContext, Ctx, Failure, InstanceError, InstanceState, Runtime, StartError, activity,
    orchestration,
};
use support::harness::{activity_body, executions, fresh_db, open};

#[activity]
async fn inc(ctx: ActivityContext, x: u64) -> Result<u64, String> {
    activity_body(&ctx).await;
    Ok(x + 1)
}

#[orchestration]
async fn two_incs(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    ctx.sleep(Duration::from_secs(3600)).await;
    let b = ctx.call(inc, a).await?;
    Ok(b)
}

async fn wait_parked(rt: &Runtime, id: &str) {
    for _ in 0..2000 {
        if rt.status(id).unwrap().and_then(|s| s.pending).as_deref() == Some("timer") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id} never parked");
}

/// Edits one stored record with the runtime closed.
fn edit_record(db: &std::path::Path, id: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let store = SledStore::open(db).unwrap();
    let mut bytes = store.get(Space::Instances, id.as_bytes()).unwrap().unwrap();
    f(&mut bytes);
    store.put(Space::Instances, id.as_bytes(), &bytes).unwrap();
    store.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_unknown_version_record_fails_only_its_instance() {
    let db = fresh_db("corrupt");
    let clock = durable::Clock::manual(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let b = || Runtime::builder(&db).orchestration(two_incs).clock(clock.clone());
    let rt = open(b).await;
    for id in ["good", "truncated", "future"] {
        rt.start(two_incs, id, 1).await.unwrap();
        wait_parked(&rt, id).await;
    }
    rt.shutdown().await;
    drop(rt);
    edit_record(&db, "truncated", |b| b.truncate(b.len() / 2));
    edit_record(&db, "future", |b| b[2] = 99);
    let rt = open(b).await;
    clock.advance(Duration::from_secs(3600));
    let good = rt.handle::<two_incs>("good").wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(good.unwrap(), 3, "the neighbours complete");
    for (id, expect) in [("truncated", "does not decode"), ("future", "format version 99")] {
        let status = rt.status(id).unwrap().unwrap();
        match &status.state {
            InstanceState::Failed { message } => {
                assert!(message.contains(id) && message.contains(expect), "{message}")
            }
            other => panic!("{id}: {other:?}"),
        }
        match rt.handle::<two_incs>(id).wait_timeout(Duration::from_secs(5)).await.unwrap() {
            Err(InstanceError::Faulted(m)) => assert!(m.contains(expect), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_orchestration_parks_and_resumes_once_registered() {
    let db = fresh_db("unregistered");
    let clock = durable::Clock::manual(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let rt = open(|| Runtime::builder(&db).orchestration(two_incs).clock(clock.clone())).await;
    rt.start(two_incs, "orphan", 10).await.unwrap();
    wait_parked(&rt, "orphan").await;
    rt.shutdown().await;
    drop(rt);
    clock.advance(Duration::from_secs(3600));
    let rt = open(|| Runtime::builder(&db).clock(clock.clone())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rt.status("orphan").unwrap().unwrap().state, InstanceState::Unregistered);
    rt.register(two_incs);
    let out = rt.handle::<two_incs>("orphan").wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(out.unwrap(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_inputs_and_payloads_are_refused() {
    let db = fresh_db("oversized");
    let rt = open(|| Runtime::builder(&db).orchestration(two_incs).max_payload(64)).await;
    #[orchestration]
    async fn takes_text(ctx: Ctx, text: String) -> Result<usize, Failure> {
        let _: String = ctx.wait_event("more").await?;
        Ok(text.len())
    }
    match rt.start(takes_text, "big", "x".repeat(1000)).await {
        Err(StartError::Input { reason, .. }) => {
            assert!(reason.contains("exceed the limit of 64"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(rt.status("big").unwrap().is_none(), "nothing was stored");
    rt.start(takes_text, "small", "ok".into()).await.unwrap();
    let err = rt.raise_event("small", "more", &"y".repeat(1000)).await.unwrap_err();
    assert!(err.to_string().contains("exceed the limit"), "{err}");
    assert_eq!(rt.status("small").unwrap().unwrap().buffered_events, 0);
}

/// A store whose instance writes (checkpoints and client changes) fail three times out of four
/// while `failing` is set.
struct FlakyStore {
    inner: SledStore,
    failing: AtomicBool,
    puts: AtomicU32,
    failed: AtomicU32,
}

impl Layer for FlakyStore {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if space == Space::Instances
            && self.failing.load(Ordering::SeqCst)
            && self.puts.fetch_add(1, Ordering::SeqCst) % 4 != 3
        {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Io("injected write failure".into()));
        }
        self.inner.put(space, key, value)
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        if self.failing.load(Ordering::SeqCst) && self.puts.fetch_add(1, Ordering::SeqCst) % 4 != 3
        {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Io("injected write failure".into()).into());
        }
        self.inner.write(id, write)
    }
}

#[orchestration]
async fn three_incs(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let b = ctx.call(inc, a).await?;
    let c = ctx.call(inc, b).await?;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkpoint_write_is_retried_and_nothing_half_done_is_read() {
    let db = fresh_db("flaky-store");
    let store = Arc::new(FlakyStore {
        inner: SledStore::open(&db).unwrap(),
        failing: AtomicBool::new(false),
        puts: AtomicU32::new(0),
        failed: AtomicU32::new(0),
    });
    let rt =
        Runtime::builder(&db).store(store.clone()).orchestration(three_incs).open().await.unwrap();
    // From now on every checkpoint write fails three times before one succeeds.
    store.failing.store(true, Ordering::SeqCst);
    let h = rt.start(three_incs, "flaky", 0).await.unwrap();
    assert_eq!(h.wait().await.unwrap(), 3);
    assert!(store.failed.load(Ordering::SeqCst) >= 12, "four checkpoints, three failures each");
    // A failed checkpoint re-runs the step, never the activity whose result it was storing.
    for (key, n) in executions("flaky") {
        assert_eq!(n, 1, "{key} ran {n} times");
    }
}

/// A store that, at the second fenced write of the run, lets the writer's lease go first, as
/// when a lease runs out unrenewed on a loaded machine and is taken anew: the write is refused
/// for its token.
struct LeaseLosingStore {
    inner: SledStore,
    fenced_writes: AtomicU32,
    lost: AtomicU32,
}

impl Layer for LeaseLosingStore {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        if let Some(fence) = write.fence
            && self.fenced_writes.fetch_add(1, Ordering::SeqCst) == 1
        {
            let held = durable::store::Lease {
                id: id.to_owned(),
                owner: String::new(),
                token: fence.token,
                expires_ms: 0,
            };
            self.inner.release(&held).unwrap();
            self.lost.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.write(id, write)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_whose_lease_went_takes_it_anew_and_finishes() {
    let db = fresh_db("lease-lost");
    let store = Arc::new(LeaseLosingStore {
        inner: SledStore::open(&db).unwrap(),
        fenced_writes: AtomicU32::new(0),
        lost: AtomicU32::new(0),
    });
    let rt =
        Runtime::builder(&db).store(store.clone()).orchestration(three_incs).open().await.unwrap();
    let h = rt.start(three_incs, "lease-lost", 0).await.unwrap();
    // One process, no other worker: a driver that stopped at the refused write would leave
    // the instance waiting for ever.
    let out = h.wait_timeout(Duration::from_secs(20)).await.expect("the instance finishes");
    assert_eq!(out.unwrap(), 3);
    assert_eq!(store.lost.load(Ordering::SeqCst), 1, "the lease went once");
    rt.shutdown().await;
}
