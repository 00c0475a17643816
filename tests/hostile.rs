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
