//! Several runtimes over one shared store, as worker processes on a server database are: work
//! is shared, a client-only runtime starts and waits, and the instances of a worker that dies
//! are taken over once its leases run out. The store here delivers no notification, so all of
//! it rests on the poll (the bound on how late work starts when notifications are lost).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use durable::store::SledStore;
use durable::{ActivityContext, Ctx, Failure, Runtime, activity, orchestration};
use support::harness::fresh_db;
use support::shared_store::SharedSled;

/// Executions of each call, by instance and idempotency key.
fn count(instance: &str) -> BTreeMap<String, u64> {
    runs()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with(instance))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn runs() -> &'static Mutex<BTreeMap<String, u64>> {
    static R: OnceLock<Mutex<BTreeMap<String, u64>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Instances whose `slow_add` never returns (as in a worker that hangs, then dies).
fn hanging() -> &'static Mutex<BTreeSet<String>> {
    static H: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    H.get_or_init(Default::default)
}

#[activity]
async fn slow_add(ctx: ActivityContext, a: u64, b: u64) -> Result<u64, String> {
    *runs()
        .lock()
        .unwrap()
        .entry(format!("{}@{}", ctx.instance_id(), ctx.idempotency_key()))
        .or_default() += 1;
    if hanging().lock().unwrap().contains(ctx.instance_id()) {
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

/// A worker runtime over `store`; counts its checkpoints in `steps`.
async fn worker(store: &Arc<SledStore>, lease_ms: u64, steps: &Arc<AtomicU64>) -> Runtime {
    let steps = steps.clone();
    Runtime::builder("unused")
        .store(Arc::new(SharedSled(store.clone())))
        .orchestration(two_steps)
        .on_step(move |_| {
            steps.fetch_add(1, Ordering::SeqCst);
        })
        .lease(Duration::from_millis(lease_ms))
        .poll(Duration::from_millis(50))
        .open()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_instances_a_client_only_runtime_starts_and_waits_for() {
    let db = fresh_db("workers-share");
    let store = Arc::new(SledStore::open(&db).unwrap());
    let (on_a, on_b, on_client) = <[Arc<AtomicU64>; 3]>::default().into();
    let a = worker(&store, 5_000, &on_a).await;
    let b = worker(&store, 5_000, &on_b).await;
    let seen = on_client.clone();
    let client = Runtime::builder("unused")
        .store(Arc::new(SharedSled(store.clone())))
        .worker(false)
        .on_step(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .poll(Duration::from_millis(50))
        .open()
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..20u64 {
        handles.push(client.start(two_steps, format!("share-{i}"), i).await.unwrap());
    }
    for (i, h) in (0u64..).zip(&handles) {
        let out = h.wait_timeout(Duration::from_secs(30)).await.expect("finishes").unwrap();
        assert_eq!(out, i + 11);
    }
    // Every call ran exactly once: no two workers ran the same step.
    let mine = count("share-");
    assert_eq!(mine.len(), 40, "{mine:?}");
    assert!(mine.values().all(|n| *n == 1), "{mine:?}");
    // 20 instances × 4 checkpoints (two calls, a timer, the end), all by the workers.
    let (by_a, by_b) = (on_a.load(Ordering::SeqCst), on_b.load(Ordering::SeqCst));
    assert_eq!(by_a + by_b, 80, "a {by_a}, b {by_b}");
    assert_eq!(on_client.load(Ordering::SeqCst), 0, "the client-only runtime ran nothing");
    for rt in [a, b, client] {
        rt.shutdown().await;
    }
}

/// Runs worker A on a tokio runtime of its own, on a thread of its own, with `orphan` started
/// and its first call hanging; returns once that call runs, with what kills A: dropping the tokio
/// runtime under it, as `kill -9` would (no shutdown, nothing given back).
fn dying_worker(store: &Arc<SledStore>, steps: &Arc<AtomicU64>) -> std::sync::mpsc::Sender<()> {
    let (store, steps) = (store.clone(), steps.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (die_tx, die_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = worker(&store, 300, &steps).await;
            a.start(two_steps, "orphan", 1).await.unwrap();
            // Kept alive (never shut down) until the runtime under it goes.
            std::mem::forget(a);
        });
        ready_tx.send(()).unwrap();
        let _ = die_rx.recv();
        rt.shutdown_background();
    });
    ready_rx.recv().unwrap();
    die_tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_instance_is_taken_over_when_its_lease_runs_out_and_not_before() {
    let db = fresh_db("workers-takeover");
    let store = Arc::new(SledStore::open(&db).unwrap());
    let steps = Arc::new(AtomicU64::new(0));
    hanging().lock().unwrap().insert("orphan".into());
    let kill_a = dying_worker(&store, &steps);
    // A runs the first call, which hangs; A renews its lease every 100 ms meanwhile.
    for _ in 0..2000 {
        if !count("orphan").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(count("orphan").len(), 1, "the first call started on A");
    // B polls every 50 ms, but A's lease is alive: B must not run the instance.
    let b = worker(&store, 300, &steps).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(count("orphan").values().copied().collect::<Vec<_>>(), [1], "B waited");
    // A dies holding the lease: nothing is released, its renewals stop.
    hanging().lock().unwrap().remove("orphan");
    kill_a.send(()).unwrap();
    let h = b.handle::<two_steps>("orphan");
    let out = h.wait_timeout(Duration::from_secs(30)).await.expect("B takes over").unwrap();
    assert_eq!(out, 12);
    // The interrupted call ran again under the same idempotency key, the rest once.
    let calls = count("orphan");
    assert_eq!(calls.values().copied().collect::<Vec<_>>(), [2, 1], "{calls:?}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_shuts_down_hands_its_instances_over_at_once() {
    let db = fresh_db("workers-handover");
    let store = Arc::new(SledStore::open(&db).unwrap());
    let (on_a, on_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    hanging().lock().unwrap().insert("handed".into());
    // Leases of ten minutes: a takeover within the test's wait can only come from the handover.
    let a = worker(&store, 600_000, &on_a).await;
    let b = worker(&store, 600_000, &on_b).await;
    a.start(two_steps, "handed", 5).await.unwrap();
    for _ in 0..2000 {
        if !count("handed").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hanging().lock().unwrap().remove("handed");
    // Whichever of the two runs it (its first step's checkpoint tells) shuts down; the other
    // takes over.
    let (gone, stays) = if on_a.load(Ordering::SeqCst) > 0 { (a, b) } else { (b, a) };
    gone.shutdown().await;
    let h = stays.handle::<two_steps>("handed");
    let out = h.wait_timeout(Duration::from_secs(20)).await.expect("handed over").unwrap();
    assert_eq!(out, 16);
    stays.shutdown().await;
}
