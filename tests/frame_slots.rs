//! Large locals stored in slots apart from the record: a checkpoint writes what changed, the
//! frame reads back whole after a restart, an ended or purged instance leaves no slot behind,
//! and a damaged slot fails its instance only.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use durable::store::{Layer, SledStore, Space, Store, StoreError, Write, WriteError};
use durable::{Ctx, Durability, Failure, InstanceError, InstanceState, Runtime, orchestration};
use support::harness::{fresh_db, open};

/// Items of 100 bytes the list holds: about 100 KB of locals.
const ITEMS: usize = 1_000;

fn list() -> Vec<String> {
    (0..ITEMS).map(|i| format!("{i:0>100}")).collect()
}

/// Holds about 100 KB that it does not change across `rounds` events, and uses it at the end.
#[orchestration]
async fn keeps_a_list(ctx: Ctx, rounds: u64) -> Result<u64, Failure> {
    let list: Vec<String> = (0..ITEMS).map(|i| format!("{i:0>100}")).collect();
    let mut acc = 0u64;
    for round in 0..rounds {
        let add: u64 = ctx.wait_event("more").await?;
        acc += add * 10 + round;
    }
    Ok(acc + list.iter().map(|s| s.len() as u64).sum::<u64>() + u64::from(list == self::list()))
}

fn expected(rounds: u64) -> u64 {
    (0..rounds).map(|r| 10 + r).sum::<u64>() + (ITEMS as u64) * 100 + 1
}

async fn wait_steps(rt: &Runtime, id: &str, steps: u64) {
    for _ in 0..2000 {
        if rt.status(id).unwrap().is_some_and(|s| s.steps >= steps) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id} never reached step {steps}");
}

/// Gives instance `id` `n` events, one step each.
async fn feed(rt: &Runtime, id: &str, n: u64) {
    let start = rt.status(id).unwrap().unwrap().steps;
    for i in 1..=n {
        rt.raise_event(id, "more", &1u64).await.unwrap();
        wait_steps(rt, id, start + i).await;
    }
}

/// The slot keys of instance `id`.
fn slots_of(store: &dyn Store, id: &str) -> Vec<Vec<u8>> {
    let mut prefix = id.as_bytes().to_vec();
    prefix.push(0xff);
    store
        .scan(Space::Slots, Some(&prefix), 10_000)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(&prefix))
        .collect()
}

/// A runtime over the sled store at `db`, and the store, to look at it while the runtime runs.
async fn open_over_sled(db: &std::path::Path, durability: Durability) -> (Arc<SledStore>, Runtime) {
    let store = Arc::new(SledStore::open(db).unwrap());
    let rt = Runtime::builder(db)
        .store(store.clone())
        .orchestration(keeps_a_list)
        .durability(durability)
        .open()
        .await
        .unwrap();
    (store, rt)
}

/// Whether the slots of instance `id` are gone within 2 s (they go once its end is durable).
async fn slots_gone(store: &dyn Store, id: &str) -> bool {
    for _ in 0..200 {
        if slots_of(store, id).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn record_len(store: &dyn Store, id: &str) -> usize {
    store.get(Space::Instances, id.as_bytes()).unwrap().unwrap().len()
}

async fn a_large_unchanged_local_leaves_the_record(durability: Durability, name: &str) {
    let db = fresh_db(name);
    let (store, rt) = open_over_sled(&db, durability).await;
    rt.start(keeps_a_list, "list", 8).await.unwrap();
    wait_steps(&rt, "list", 1).await;
    let whole = record_len(store.as_ref(), "list");
    assert!(whole > 100_000, "first checkpoint: all inline ({whole} bytes)");
    let mut small = false;
    for _ in 0..6 {
        feed(&rt, "list", 1).await;
        // Buffered: the slots are named once a flush the runtime asked for has made them
        // durable; give it the time.
        tokio::time::sleep(Duration::from_millis(20)).await;
        small |= record_len(store.as_ref(), "list") < 2_000;
    }
    let status = rt.status("list").unwrap().unwrap();
    assert!(small, "the record names its slots: {} bytes", record_len(store.as_ref(), "list"));
    assert!(status.frame_bytes > 100_000, "the status counts the slots: {}", status.frame_bytes);
    assert!(!slots_of(store.as_ref(), "list").is_empty());
    rt.shutdown().await;
    drop(rt);
    drop(store);

    // Reopened: the frame reads back whole from its slots, and the instance goes on.
    let (store, rt) = open_over_sled(&db, durability).await;
    let shown = rt.locals("list").unwrap().unwrap();
    let (_, value) = shown.locals.iter().find(|(name, _)| name == "list").unwrap();
    assert_eq!(value.as_array().map(Vec::len), Some(ITEMS), "the web view reads the slots too");
    feed(&rt, "list", 1).await;
    rt.raise_event("list", "more", &1u64).await.unwrap();
    let out = rt.handle::<keeps_a_list>("list").wait_timeout(Duration::from_secs(10)).await;
    assert_eq!(out.unwrap().unwrap(), expected(8));
    // Ended: its slots go once the end is durable.
    assert!(slots_gone(store.as_ref(), "list").await, "an ended instance keeps no slot");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_unchanged_local_leaves_the_record_and_reads_back_after_a_restart() {
    a_large_unchanged_local_leaves_the_record(Durability::Flush, "slots-flush").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_checkpoints_name_slots_too() {
    a_large_unchanged_local_leaves_the_record(Durability::Buffered, "slots-buffered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_damaged_slot_fails_its_instance_only_and_purge_removes_the_rest() {
    let db = fresh_db("slots-damaged");
    let b = || Runtime::builder(&db).orchestration(keeps_a_list);
    let rt = open(b).await;
    for id in ["missing", "damaged", "fine"] {
        rt.start(keeps_a_list, id, 8).await.unwrap();
        wait_steps(&rt, id, 1).await;
        feed(&rt, id, 3).await;
    }
    rt.shutdown().await;
    drop(rt);
    {
        let store = SledStore::open(&db).unwrap();
        let missing = slots_of(&store, "missing");
        assert!(!missing.is_empty());
        store.delete(Space::Slots, &missing[0]).unwrap();
        let damaged = slots_of(&store, "damaged");
        let mut value = store.get(Space::Slots, &damaged[0]).unwrap().unwrap();
        value[10] ^= 1;
        store.put(Space::Slots, &damaged[0], &value).unwrap();
        store.flush().unwrap();
    }
    let rt = open(b).await;
    for id in ["missing", "damaged", "fine"] {
        rt.raise_event(id, "more", &1u64).await.unwrap();
    }
    for (id, expect) in [("missing", "missing from the store"), ("damaged", "does not hold")] {
        let out = rt.handle::<keeps_a_list>(id).wait_timeout(Duration::from_secs(10)).await;
        match out.unwrap() {
            Err(InstanceError::Faulted(m)) => {
                assert!(m.contains(id) && m.contains(expect) && m.contains("slot"), "{m}")
            }
            other => panic!("{id}: {other:?}"),
        }
        assert!(matches!(rt.status(id).unwrap().unwrap().state, InstanceState::Failed { .. }));
    }
    feed(&rt, "fine", 3).await;
    rt.raise_event("fine", "more", &1u64).await.unwrap();
    let out = rt.handle::<keeps_a_list>("fine").wait_timeout(Duration::from_secs(10)).await;
    assert_eq!(out.unwrap().unwrap(), expected(8), "the neighbour completes");
    rt.purge("missing").await.unwrap();
    rt.purge("damaged").await.unwrap();
    rt.shutdown().await;
    drop(rt);
    let store = SledStore::open(&db).unwrap();
    for id in ["missing", "damaged", "fine"] {
        assert!(slots_of(&store, id).is_empty(), "{id} keeps no slot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_instance_leaves_no_slot() {
    let db = fresh_db("slots-cancelled");
    let (store, rt) = open_over_sled(&db, Durability::Flush).await;
    rt.start(keeps_a_list, "cancelled", 8).await.unwrap();
    wait_steps(&rt, "cancelled", 1).await;
    feed(&rt, "cancelled", 3).await;
    assert!(!slots_of(store.as_ref(), "cancelled").is_empty());
    rt.cancel("cancelled", "enough").await.unwrap();
    let out = rt.handle::<keeps_a_list>("cancelled").wait_timeout(Duration::from_secs(10)).await;
    assert!(matches!(out, Some(Err(InstanceError::Cancelled(_)))), "{out:?}");
    assert!(slots_gone(store.as_ref(), "cancelled").await, "a cancelled instance keeps none");
    rt.shutdown().await;
}

/// A sled store that counts the reads of frame slots, and fails instance writes while
/// `fail_writes` is above zero (one write each).
struct CountsSlotReads {
    inner: SledStore,
    slot_reads: AtomicUsize,
    fail_writes: AtomicUsize,
}

impl Layer for CountsSlotReads {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if space == Space::Slots {
            self.slot_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(space, key)
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        let failing =
            self.fail_writes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(WriteError::Store(StoreError::Io("injected: write failed".into())));
        }
        self.inner.write(id, write)
    }
}

/// A step of the process that wrote the checkpoint before takes the state it left in memory
/// and reads none of the frame's slots; a restart, and a step run again after a failed
/// checkpoint, read them back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_in_one_process_read_no_slot_and_a_restart_or_a_failed_checkpoint_reads_them() {
    let db = fresh_db("slots-unread");
    let counting = || CountsSlotReads {
        inner: SledStore::open(&db).unwrap(),
        slot_reads: 0.into(),
        fail_writes: 0.into(),
    };
    let store = Arc::new(counting());
    let b = |store: &Arc<CountsSlotReads>| {
        Runtime::builder(&db).store(store.clone()).orchestration(keeps_a_list)
    };
    let rt = b(&store).open().await.unwrap();
    rt.start(keeps_a_list, "kept", 8).await.unwrap();
    wait_steps(&rt, "kept", 1).await;
    feed(&rt, "kept", 3).await;
    assert!(!slots_of(&store.inner, "kept").is_empty(), "the list is in slots");
    assert_eq!(store.slot_reads.load(Ordering::SeqCst), 0, "steps took the state in memory");

    // The step's first run reads nothing; its checkpoint fails; the run again reads the frame.
    store.fail_writes.store(1, Ordering::SeqCst);
    feed(&rt, "kept", 1).await;
    assert_eq!(store.fail_writes.load(Ordering::SeqCst), 0, "the failure was injected");
    let after_retry = store.slot_reads.load(Ordering::SeqCst);
    assert!(after_retry > 0, "the step run again read its frame back");
    feed(&rt, "kept", 1).await;
    assert_eq!(store.slot_reads.load(Ordering::SeqCst), after_retry, "then memory again");
    rt.shutdown().await;
    drop(rt);
    drop(store);

    let store = loop {
        // The runtime's directory lock goes a moment after its drop.
        match std::panic::catch_unwind(counting) {
            Ok(store) => break Arc::new(store),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let rt = b(&store).open().await.unwrap();
    feed(&rt, "kept", 1).await;
    assert!(store.slot_reads.load(Ordering::SeqCst) > 0, "a restart reads the frame back");
    feed(&rt, "kept", 1).await;
    rt.raise_event("kept", "more", &1u64).await.unwrap();
    let out = rt.handle::<keeps_a_list>("kept").wait_timeout(Duration::from_secs(10)).await;
    assert_eq!(out.unwrap().unwrap(), expected(8), "every round counted once, the list intact");
    rt.shutdown().await;
}

/// A store written before frame slots: it does not say it keeps them.
struct NoSlots(Arc<SledStore>);

impl Layer for NoSlots {
    fn inner(&self) -> &dyn Store {
        &*self.0
    }
    fn keeps_slots(&self) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_keeps_no_slots_gets_whole_frames() {
    let db = fresh_db("slots-none");
    let sled = Arc::new(SledStore::open(&db).unwrap());
    let store = Arc::new(NoSlots(sled.clone()));
    let rt = Runtime::builder(&db).store(store).orchestration(keeps_a_list).open().await.unwrap();
    rt.start(keeps_a_list, "whole", 5).await.unwrap();
    wait_steps(&rt, "whole", 1).await;
    feed(&rt, "whole", 4).await;
    assert!(record_len(sled.as_ref(), "whole") > 100_000, "the record holds the whole frame");
    assert!(slots_of(sled.as_ref(), "whole").is_empty());
    rt.raise_event("whole", "more", &1u64).await.unwrap();
    let out = rt.handle::<keeps_a_list>("whole").wait_timeout(Duration::from_secs(10)).await;
    assert_eq!(out.unwrap().unwrap(), expected(5));
    rt.shutdown().await;
}

/// Visits its items in order, one event per item: the event carries a weight, and the sum of
/// weight × the item's number is largest only when every item meets its own event.
#[orchestration]
async fn visits_each(ctx: Ctx, items: Vec<String>) -> Result<u64, Failure> {
    let mut sum = 0u64;
    for item in items {
        let weight: u64 = ctx.wait_event("more").await?;
        sum += weight * item.parse::<u64>().unwrap_or(0);
    }
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_for_loop_over_a_large_vec_keeps_its_record_small_and_resumes_in_order() {
    const N: u64 = 400;
    let db = fresh_db("slots-for");
    let open_it = || async {
        let store = Arc::new(SledStore::open(&db).unwrap());
        let rt = Runtime::builder(&db)
            .store(store.clone())
            .orchestration(visits_each)
            .open()
            .await
            .unwrap();
        (store, rt)
    };
    let (store, rt) = open_it().await;
    let items: Vec<String> = (0..N).map(|i| format!("{i:0>100}")).collect();
    rt.start(visits_each, "for", items).await.unwrap();
    wait_steps(&rt, "for", 1).await;
    let mut sizes = Vec::new();
    for i in 0..12 {
        rt.raise_event("for", "more", &i).await.unwrap();
        wait_steps(&rt, "for", i + 2).await;
        sizes.push(record_len(store.as_ref(), "for"));
    }
    // 40 KB of items: the record names them by one list slot (its chunks one by one would take
    // some 200 bytes more) and holds the count of items taken (not the front of the items
    // left, a chunk of 1 to 32 KiB).
    let late = sizes[6..].iter().max().unwrap();
    assert!(*late < 450, "record bytes per checkpoint: {sizes:?}");
    rt.shutdown().await;
    drop(rt);
    drop(store);

    let (store, rt) = open_it().await;
    for i in 12..N {
        rt.raise_event("for", "more", &i).await.unwrap();
    }
    let out = rt.handle::<visits_each>("for").wait_timeout(Duration::from_secs(60)).await;
    assert_eq!(
        out.unwrap().unwrap(),
        (0..N).map(|i| i * i).sum::<u64>(),
        "each item once, in order"
    );
    assert!(slots_gone(store.as_ref(), "for").await);
    rt.shutdown().await;
}
