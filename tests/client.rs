//! The client: what `cancel`, `suspend`, `wait` and the instance states promise.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::time::{Duration, UNIX_EPOCH};

use durable::{Clock, Ctx, Failure, InstanceState, Runtime, orchestration};
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
