//! Hostile and careless use: huge values, deep values, squatted ids, blocking code, piles of
//! timers. Each one stalls or fails at most the instance it concerns, with a clear error, and
//! leaves nothing behind.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use durable::store::{SledStore, Space, Store};
use durable::{Ctx, Durability, Failure, Runtime, orchestration};
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
    // `P:1` is the id `P` derives for the child it starts at its first step.
    let squatter = rt.start(kid, "P:1", 666).await.unwrap();
    assert_eq!(squatter.wait().await.unwrap(), 6660);
    let p = rt.start(parent, "P", 1).await.unwrap();
    match p.wait_timeout(Duration::from_secs(10)).await.unwrap() {
        Err(durable::InstanceError::Failed { message, .. }) => {
            assert!(message.contains("belongs to a client"), "{message}")
        }
        other => panic!("the parent took the squatter's result: {other:?}"),
    }
    // Nor can a client take over a parent's real child.
    let q = rt.start(parent, "Q", 2).await.unwrap();
    assert_eq!(q.wait().await.unwrap(), 21);
    match rt.start(kid, "Q:1", 2).await {
        Err(durable::StartError::Taken { owner, .. }) => assert!(owner.contains("`Q`"), "{owner}"),
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
