//! Runtimes in several "processes" (each over a `PgStore` of its own on one schema): work is
//! shared, a client-only runtime starts and waits, notifications alone carry work and results
//! across processes, a dead worker's instance is taken over once its lease runs out, the poll
//! leaves waiting instances alone, and an announced instance is claimed although its row was
//! held at the moment (without holding up other announcements), or handed over by a worker
//! that shut down while claiming it.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable::store::{Layer, Lease, Message, Store, StoreError, Versioned};
use durable::{ActivityContext, Ctx, Failure, Runtime, activity, orchestration};
use durable_postgres::PgStore;
use support::TempSchema;

/// Executions of each call, by instance and idempotency key.
static RUNS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
/// Instances whose `slow_add` never returns (as in a worker that hangs, then dies).
static HANGING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn count(instance: &str) -> BTreeMap<String, u64> {
    RUNS.lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with(instance))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[activity]
async fn slow_add(ctx: ActivityContext, a: u64, b: u64) -> Result<u64, String> {
    *RUNS
        .lock()
        .unwrap()
        .entry(format!("{}@{}", ctx.instance_id(), ctx.idempotency_key()))
        .or_default() += 1;
    if HANGING.lock().unwrap().contains(ctx.instance_id()) {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(a + b)
}

#[orchestration]
async fn two_steps(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(slow_add, (x, 1)).await?;
    ctx.sleep(Duration::from_millis(20)).await;
    let b = ctx.call(slow_add, (a, 10)).await?;
    Ok(b)
}

#[orchestration]
async fn waits_for_go(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let n: u64 = ctx.wait_event("go").await?;
    Ok(x + n)
}

/// A worker runtime over a store of its own (its own "process"); counts its checkpoints.
async fn worker(
    schema: &TempSchema,
    lease: Duration,
    poll: Duration,
    steps: &Arc<AtomicU64>,
) -> Runtime {
    let steps = steps.clone();
    Runtime::builder("unused")
        .store(Arc::new(schema.store()))
        .orchestration(two_steps)
        .orchestration(waits_for_go)
        .on_step(move |_| {
            steps.fetch_add(1, Ordering::SeqCst);
        })
        .lease(lease)
        .poll(poll)
        .open()
        .await
        .unwrap()
}

/// A client-only runtime over a store of its own.
async fn client(schema: &TempSchema, poll: Duration, steps: &Arc<AtomicU64>) -> Runtime {
    let steps = steps.clone();
    Runtime::builder("unused")
        .store(Arc::new(schema.store()))
        .worker(false)
        .on_step(move |_| {
            steps.fetch_add(1, Ordering::SeqCst);
        })
        .poll(poll)
        .open()
        .await
        .unwrap()
}

/// Waits until instance `id` waits for its event `go`.
async fn waiting_for_go(rt: &Runtime, id: &str) {
    for _ in 0..1000 {
        if rt.status(id).unwrap().and_then(|s| s.pending).as_deref() == Some("event `go`") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Holds the row of instance `id` for `secs` seconds in a transaction that ends without changing
/// it (as a renewal that found the lease gone, or a statement that failed): it announces nothing.
fn hold_row(schema: &TempSchema, id: &str, secs: u32) -> std::thread::JoinHandle<()> {
    let lock = format!(
        "BEGIN; SELECT 1 FROM \"{}\".instances WHERE id = convert_to('{id}', 'UTF8') \
         FOR NO KEY UPDATE; SELECT pg_sleep({secs}); ROLLBACK;",
        schema.name
    );
    std::thread::spawn(move || {
        support::sql(&lock);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_instances_a_client_only_runtime_starts_and_waits_for() {
    let schema = TempSchema::new("share");
    let (on_a, on_b, on_client) = <[Arc<AtomicU64>; 3]>::default().into();
    let poll = Duration::from_millis(50);
    let a = worker(&schema, Duration::from_secs(5), poll, &on_a).await;
    let b = worker(&schema, Duration::from_secs(5), poll, &on_b).await;
    let c = client(&schema, poll, &on_client).await;
    let mut handles = Vec::new();
    for i in 0..20u64 {
        handles.push(c.start(two_steps, format!("share-{i}"), i).await.unwrap());
    }
    for (i, h) in (0u64..).zip(&handles) {
        let out = h.wait_timeout(Duration::from_secs(30)).await.expect("finishes").unwrap();
        assert_eq!(out, i + 11);
    }
    let calls = count("share-");
    assert_eq!(calls.len(), 40, "{calls:?}");
    assert!(calls.values().all(|n| *n == 1), "every call ran once: {calls:?}");
    // A worker reports a checkpoint after it committed, and the client may be told of the commit
    // (by a notification) before that report: wait for the last ones.
    let steps = || on_a.load(Ordering::SeqCst) + on_b.load(Ordering::SeqCst);
    for _ in 0..500 {
        if steps() >= 80 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (by_a, by_b) = (on_a.load(Ordering::SeqCst), on_b.load(Ordering::SeqCst));
    assert_eq!(by_a + by_b, 80, "20 instances × 4 checkpoints: a {by_a}, b {by_b}");
    assert_eq!(on_client.load(Ordering::SeqCst), 0, "the client-only runtime ran nothing");
    for rt in [a, b, c] {
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_alone_carry_starts_events_and_results_across_processes() {
    let schema = TempSchema::new("notified");
    // Polls a minute apart: whatever happens within seconds was carried by a notification.
    let poll = Duration::from_secs(60);
    let steps = Arc::new(AtomicU64::new(0));
    let w = worker(&schema, Duration::from_secs(15), poll, &steps).await;
    let c = client(&schema, poll, &Arc::new(AtomicU64::new(0))).await;
    let t = Instant::now();
    let h = c.start(two_steps, "n-run", 1).await.unwrap();
    assert_eq!(
        h.wait_timeout(Duration::from_secs(10)).await.expect("done by notification").unwrap(),
        12
    );
    let started_and_done = t.elapsed();
    let h = c.start(waits_for_go, "n-wait", 1).await.unwrap();
    waiting_for_go(&c, "n-wait").await;
    let t = Instant::now();
    c.raise_event("n-wait", "go", &2u64).await.unwrap();
    assert_eq!(
        h.wait_timeout(Duration::from_secs(10)).await.expect("woken by notification").unwrap(),
        3
    );
    let raised_and_done = t.elapsed();
    println!(
        "across processes: start to result {started_and_done:?}, raise to result {raised_and_done:?}"
    );
    // The worker reports a step after its checkpoint committed, which the client may see first.
    for _ in 0..500 {
        if steps.load(Ordering::SeqCst) >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(steps.load(Ordering::SeqCst) >= 6, "the worker ran both");
    w.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_instance_is_taken_over_when_its_lease_runs_out_and_not_before() {
    let schema = TempSchema::new("takeover");
    let steps = Arc::new(AtomicU64::new(0));
    let (lease, poll) = (Duration::from_millis(300), Duration::from_millis(50));
    HANGING.lock().unwrap().insert("orphan".into());
    let a = worker(&schema, lease, poll, &steps).await;
    a.start(two_steps, "orphan", 1).await.unwrap();
    for _ in 0..2000 {
        if !count("orphan").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(count("orphan").len(), 1, "the first call started on A");
    // B polls every 50 ms, but A renews its lease: B must not run the instance.
    let b = worker(&schema, lease, poll, &steps).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(count("orphan").values().copied().collect::<Vec<_>>(), [1], "B waited");
    // A dies holding the lease (its tasks stop; nothing is released).
    HANGING.lock().unwrap().remove("orphan");
    a.shutdown().await;
    let out = b
        .handle::<two_steps>("orphan")
        .wait_timeout(Duration::from_secs(30))
        .await
        .expect("B takes over")
        .unwrap();
    assert_eq!(out, 12);
    let calls = count("orphan");
    assert_eq!(calls.values().copied().collect::<Vec<_>>(), [2, 1], "{calls:?}");
    b.shutdown().await;
}

/// A `PgStore` that counts the reads of instances and the claims of its runtime.
struct Counting {
    inner: PgStore,
    reads: AtomicU64,
    claims: AtomicU64,
    abandoned_claims: AtomicU64,
}

impl Layer for Counting {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn read_with_inbox(&self, id: &str) -> Result<Option<(Versioned, Vec<Message>)>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_with_inbox(id)
    }
    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(owner, now_ms, until_ms, after, limit)
    }
    fn claim_abandoned(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.abandoned_claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim_abandoned(owner, now_ms, until_ms, after, limit)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_leaves_waiting_instances_alone() {
    const N: u64 = 20;
    let schema = TempSchema::new("idle_poll");
    let store = Arc::new(Counting {
        inner: schema.store(),
        reads: AtomicU64::new(0),
        claims: AtomicU64::new(0),
        abandoned_claims: AtomicU64::new(0),
    });
    let poll = Duration::from_millis(20);
    let rt = Runtime::builder("unused")
        .store(store.clone())
        .orchestration(waits_for_go)
        .poll(poll)
        .open()
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..N {
        handles.push(rt.start(waits_for_go, format!("idle-{i}"), i).await.unwrap());
    }
    let waiting = |rt: &Runtime| {
        (0..N).all(|i| {
            rt.status(&format!("idle-{i}")).unwrap().and_then(|s| s.pending).as_deref()
                == Some("event `go`")
        })
    };
    for _ in 0..1000 {
        if waiting(&rt) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting(&rt), "every instance waits for its event");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before =
        [&store.reads, &store.claims, &store.abandoned_claims].map(|c| c.load(Ordering::SeqCst));
    // About 20 polls; at most one of them sweeps every unheld instance.
    tokio::time::sleep(poll * 20).await;
    let [reads, claims, abandoned] = [&store.reads, &store.claims, &store.abandoned_claims]
        .map(|c| c.load(Ordering::SeqCst))
        .into_iter()
        .zip(before)
        .map(|(after, before)| after - before)
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    println!("in 20 polls: {reads} reads, {claims} full claims, {abandoned} abandoned-only claims");
    // A claim of every waiting instance at every poll read each of them 20 times.
    assert!(reads <= N + 2, "{reads} reads of {N} waiting instances in 20 polls");
    assert!(abandoned >= 5, "the poll runs: {abandoned} claims of abandoned instances");
    // One sweep is two calls: the page of 20, then the empty page after it.
    assert!(claims <= 2, "one sweep at most in 20 polls, not {claims} claim calls");
    for i in 0..N {
        rt.raise_event(&format!("idle-{i}"), "go", &1u64).await.unwrap();
    }
    for (i, h) in (0..N).zip(handles) {
        assert_eq!(h.wait_timeout(Duration::from_secs(20)).await.unwrap().unwrap(), i + 1);
    }
    rt.shutdown().await;
}

/// Runs of `slow_step`'s first step, by instance.
static SLOW_STEP_RUNS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

#[orchestration]
async fn slow_step(ctx: Ctx, ms: u64) -> Result<u64, Failure> {
    *SLOW_STEP_RUNS.lock().unwrap().entry(ctx.instance_id().to_owned()).or_default() += 1;
    // Computes for longer than a lease, without a checkpoint or an activity.
    std::thread::sleep(Duration::from_millis(ms));
    let a = ctx.call(slow_add, (ms, 1)).await?;
    Ok(a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_computes_longer_than_its_lease_keeps_it() {
    let schema = TempSchema::new("long_step");
    let (lease, poll) = (Duration::from_millis(300), Duration::from_millis(50));
    let open = || async {
        Runtime::builder("unused")
            .store(Arc::new(schema.store()))
            .orchestration(slow_step)
            .lease(lease)
            .poll(poll)
            .open()
            .await
            .unwrap()
    };
    let (a, b) = (open().await, open().await);
    // Started by A, whose driver takes the lease at once; B polls every 50 ms meanwhile.
    let h = a.start(slow_step, "long-step", 1_500).await.unwrap();
    assert_eq!(h.wait_timeout(Duration::from_secs(30)).await.unwrap().unwrap(), 1_501);
    let runs = SLOW_STEP_RUNS.lock().unwrap().get("long-step").copied();
    // Without renewals while the step computes, B claims the lease that ran out after 300 ms
    // and runs the step a second time.
    assert_eq!(runs, Some(1), "the step ran on one worker, once");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_leave_a_waiting_or_finished_instance_alone() {
    let schema = TempSchema::new("quiet");
    let counting = || {
        Arc::new(Counting {
            inner: schema.store(),
            reads: AtomicU64::new(0),
            claims: AtomicU64::new(0),
            abandoned_claims: AtomicU64::new(0),
        })
    };
    let (store_a, store_b) = (counting(), counting());
    let open = |store: Arc<Counting>| async move {
        Runtime::builder("unused")
            .store(store)
            .orchestration(waits_for_go)
            .poll(Duration::from_secs(60))
            .open()
            .await
            .unwrap()
    };
    let (a, b) = (open(store_a.clone()).await, open(store_b.clone()).await);
    let waiting = a.start(waits_for_go, "quiet-wait", 1).await.unwrap();
    let done = a.start(waits_for_go, "quiet-done", 2).await.unwrap();
    a.raise_event("quiet-done", "go", &1u64).await.unwrap();
    assert_eq!(done.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 3);
    waiting_for_go(&a, "quiet-wait").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reads = || store_a.reads.load(Ordering::SeqCst) + store_b.reads.load(Ordering::SeqCst);
    let before = reads();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = reads() - before;
    // Nothing happened: no worker has a reason to read either instance.
    assert!(read <= 2, "{read} reads of a waiting and a finished instance in 500 ms");
    a.raise_event("quiet-wait", "go", &5u64).await.unwrap();
    assert_eq!(waiting.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 6);
    a.shutdown().await;
    b.shutdown().await;
}

/// A `PgStore` whose claims by id return only after a pause: the claim has taken the leases in
/// the database, and the runtime learns of them late (as when it shuts down meanwhile).
struct SlowClaims {
    inner: PgStore,
    pause: Duration,
}

impl Layer for SlowClaims {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn claim_ids(
        &self,
        owner: &str,
        ids: &[String],
        now_ms: u64,
        until_ms: u64,
    ) -> Option<Result<Vec<Lease>, StoreError>> {
        let claimed = self.inner.claim_ids(owner, ids, now_ms, until_ms);
        std::thread::sleep(self.pause);
        claimed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_shuts_down_while_claiming_hands_the_claimed_instances_over() {
    let schema = TempSchema::new("handclaim");
    let steps = Arc::new(AtomicU64::new(0));
    let poll = Duration::from_secs(60);
    // A's lease would hold the instance for a minute, past the test's patience.
    let a = Runtime::builder("unused")
        .store(Arc::new(SlowClaims { inner: schema.store(), pause: Duration::from_millis(800) }))
        .orchestration(two_steps)
        .lease(Duration::from_secs(60))
        .poll(poll)
        .open()
        .await
        .unwrap();
    let c = client(&schema, poll, &Arc::new(AtomicU64::new(0))).await;
    // The start is announced to A, whose claim takes the lease and returns late.
    let h = c.start(two_steps, "handed", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = worker(&schema, Duration::from_secs(60), poll, &steps).await;
    a.shutdown().await;
    let t = Instant::now();
    let out = h.wait_timeout(Duration::from_secs(20)).await.expect("B ran it").unwrap();
    assert_eq!(out, 12);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "B waited {:?}: A kept the lease its late claim took",
        t.elapsed()
    );
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_instance_whose_row_another_transaction_holds_is_claimed_once_it_is_free() {
    let schema = TempSchema::new("heldrow");
    let poll = Duration::from_secs(60);
    let w = worker(&schema, Duration::from_secs(15), poll, &Arc::new(AtomicU64::new(0))).await;
    let c = client(&schema, poll, &Arc::new(AtomicU64::new(0))).await;
    let h = c.start(waits_for_go, "held", 1).await.unwrap();
    waiting_for_go(&c, "held").await;
    let holder = hold_row(&schema, "held", 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.raise_event("held", "go", &2u64).await.unwrap();
    let out = h.wait_timeout(Duration::from_secs(10)).await;
    holder.join().unwrap();
    assert_eq!(out.expect("the event's announcement was not lost to the held row").unwrap(), 3);
    w.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waiting_for_a_held_row_does_not_hold_up_other_announcements() {
    let schema = TempSchema::new("nothold");
    let poll = Duration::from_secs(60);
    let w = worker(&schema, Duration::from_secs(15), poll, &Arc::new(AtomicU64::new(0))).await;
    let c = client(&schema, poll, &Arc::new(AtomicU64::new(0))).await;
    let held = c.start(waits_for_go, "held-long", 1).await.unwrap();
    waiting_for_go(&c, "held-long").await;
    let holder = hold_row(&schema, "held-long", 5);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The worker's claim of `held-long` waits for the row; a start announced after it does not.
    c.raise_event("held-long", "go", &2u64).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let other = c.start(two_steps, "other", 1).await.unwrap();
    assert_eq!(other.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 12);
    let took = t.elapsed();
    holder.join().unwrap();
    assert_eq!(held.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 3);
    assert!(took < Duration::from_millis(4_000), "the start waited {took:?} behind the held row");
    w.shutdown().await;
    c.shutdown().await;
}
