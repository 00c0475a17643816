//! How the runtime uses the store contract: events are appended to an instance's inbox without
//! rewriting its record, and a client's request that races a step's checkpoint is kept, not
//! overwritten.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use durable::store::{SledStore, Store};
use durable::{Ctx, Failure, InstanceState, Runtime, orchestration};
use support::harness::fresh_db;

#[orchestration]
async fn waits_for_go(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let n: u64 = ctx.wait_event("go").await?;
    Ok(x + n)
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_event_is_appended_without_rewriting_the_record() {
    let db = fresh_db("contract-raise");
    let store = Arc::new(SledStore::open(&db).unwrap());
    let rt = Runtime::builder(&db)
        .store(store.clone())
        .orchestration(waits_for_go)
        .open()
        .await
        .unwrap();
    let h = rt.start(waits_for_go, "w", 1).await.unwrap();
    let pending = || rt.status("w").unwrap().and_then(|s| s.pending);
    eventually("parked at the event", || pending().as_deref() == Some("event `go`")).await;
    let before = store.read("w").unwrap().unwrap();
    // An event nobody waits for: appended, the record untouched, counted as buffered.
    rt.raise_event("w", "other", &7u64).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.read("w").unwrap().unwrap(), before, "a raise rewrote the record");
    assert_eq!(store.inbox("w").unwrap().len(), 1);
    assert_eq!(rt.status("w").unwrap().unwrap().buffered_events, 1);
    // The awaited event: the step that takes it consumes it in the same write.
    rt.raise_event("w", "go", &41u64).await.unwrap();
    assert_eq!(h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 42);
    let left = store.inbox("w").unwrap();
    assert_eq!(left.len(), 1, "only the event nobody took is left: {left:?}");
    assert!(store.read("w").unwrap().unwrap().version > before.version);
    rt.shutdown().await;
}

#[orchestration]
async fn slow_step(ctx: Ctx, ms: u64) -> Result<u64, Failure> {
    let () = ctx.wait_event("go").await?;
    // The code of this step runs long, so a client's request lands while it runs.
    std::thread::sleep(Duration::from_millis(ms));
    ctx.sleep(Duration::from_millis(1)).await;
    Ok(ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_races_a_checkpoint_is_kept() {
    let db = fresh_db("contract-race");
    let store = Arc::new(SledStore::open(&db).unwrap());
    let rt =
        Runtime::builder(&db).store(store.clone()).orchestration(slow_step).open().await.unwrap();
    let h = rt.start(slow_step, "r", 600).await.unwrap();
    let status = || rt.status("r").unwrap().unwrap();
    eventually("parked at the event", || status().pending.as_deref() == Some("event `go`")).await;
    rt.raise_event("r", "go", &()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The step runs; the suspension is written over the version the driver read.
    let read_by_driver = store.read("r").unwrap().unwrap().version;
    rt.suspend("r").await.unwrap();
    assert_eq!(store.read("r").unwrap().unwrap().version, read_by_driver + 1);
    eventually("the step's checkpoint", || status().steps == 2).await;
    // The checkpoint lost its race, and kept the request instead of overwriting it.
    assert_eq!(status().state, InstanceState::Suspended);
    assert_eq!(status().pending.as_deref(), Some("timer"));
    assert!(h.wait_timeout(Duration::from_millis(200)).await.is_none(), "suspended");
    rt.resume("r").await.unwrap();
    assert_eq!(h.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 600);
    rt.shutdown().await;
}
