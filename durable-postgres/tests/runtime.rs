//! The runtime over a `PgStore`: an orchestration with an activity, a timer and an event runs
//! to completion, and a second runtime over a new store on the same schema (a restart)
//! resumes an instance the first left unfinished; events one orchestration sends another
//! (`ctx.send_event`) arrive once across a restart.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use durable::store::Store;
use durable::{
    ActivityContext, Clock, Ctx, Failure, InstanceState, Runtime, activity, orchestration,
};
use support::TempSchema;

/// Executions of `double` by instance.
static RUNS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

#[activity]
async fn double(ctx: ActivityContext, x: u64) -> Result<u64, String> {
    *RUNS.lock().unwrap().entry(ctx.instance_id().to_owned()).or_default() += 1;
    Ok(x * 2)
}

/// An activity, a one-second timer, then an event.
#[orchestration]
async fn flow(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let doubled = ctx.call(double, x).await?;
    ctx.sleep(Duration::from_secs(1)).await;
    let n: u64 = ctx.wait_event("go").await?;
    Ok(doubled + n)
}

/// The runtime's directory: unused with a store of its own, but the builder names one.
fn dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("durable-postgres-{name}-{}", std::process::id()))
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

fn pending(rt: &Runtime, id: &str) -> Option<String> {
    rt.status(id).unwrap().and_then(|s| s.pending)
}

// A current-thread runtime: the store's blocking calls must neither panic nor deadlock there.
#[tokio::test]
async fn an_orchestration_with_an_activity_a_timer_and_an_event_completes() {
    let schema = TempSchema::new("e2e");
    let store = Arc::new(schema.store());
    let rt =
        Runtime::builder(dir("e2e")).store(store.clone()).orchestration(flow).open().await.unwrap();
    let handle = rt.start(flow, "one", 20).await.unwrap();
    eventually("parked at the event", || pending(&rt, "one").as_deref() == Some("event `go`"))
        .await;
    rt.raise_event("one", "go", &2u64).await.unwrap();
    assert_eq!(handle.wait_timeout(Duration::from_secs(20)).await.unwrap().unwrap(), 42);
    assert!(matches!(rt.status("one").unwrap().unwrap().state, InstanceState::Completed));
    assert_eq!(RUNS.lock().unwrap().get("one"), Some(&1), "the activity ran once");
    // The record is in PostgreSQL, finished: nobody claims it.
    assert!(store.read("one").unwrap().unwrap().version >= 4);
    assert!(store.claim("someone", u64::MAX - 1, u64::MAX, None, 10).unwrap().is_empty());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runtime_on_the_schema_resumes_an_unfinished_instance() {
    let schema = TempSchema::new("restart");
    let start = SystemTime::now();
    {
        let clock = Clock::manual(start);
        let store = Arc::new(schema.store());
        let rt = Runtime::builder(dir("restart1"))
            .store(store)
            .orchestration(flow)
            .clock(clock)
            .open()
            .await
            .unwrap();
        rt.start(flow, "two", 10).await.unwrap();
        // Its clock stands still: the instance waits at its timer.
        eventually("at the timer", || pending(&rt, "two").as_deref() == Some("timer")).await;
        rt.shutdown().await;
    }
    assert_eq!(RUNS.lock().unwrap().get("two"), Some(&1));
    // The "restarted process": a new store, a new runtime whose clock is past the timer and
    // past any lease the first one may have left behind.
    let clock = Clock::manual(start + Duration::from_secs(120));
    let store = Arc::new(schema.store());
    let rt = Runtime::builder(dir("restart2"))
        .store(store.clone())
        .orchestration(flow)
        .clock(clock)
        .open()
        .await
        .unwrap();
    eventually("past the timer, at the event", || {
        pending(&rt, "two").as_deref() == Some("event `go`")
    })
    .await;
    rt.raise_event("two", "go", &1u64).await.unwrap();
    let out =
        rt.handle::<flow>("two").wait_timeout(Duration::from_secs(20)).await.unwrap().unwrap();
    assert_eq!(out, 21);
    assert_eq!(RUNS.lock().unwrap().get("two"), Some(&1), "the activity did not run again");
    assert!(store.due_timers(u64::MAX, 10).unwrap().0.is_empty(), "the timer was cleared");
    rt.shutdown().await;
}

/// Collects `ping` events until one carries 0.
#[orchestration]
async fn collector(ctx: Ctx, _x: u32) -> Result<Vec<u32>, Failure> {
    let mut got = Vec::new();
    loop {
        let v: u32 = ctx.wait_event("ping").await?;
        if v == 0 {
            return Ok(got);
        }
        got.push(v);
    }
}

/// Sends 7, waits for `more`, sends 0, then tries an instance that does not exist.
#[orchestration]
async fn pinger(ctx: Ctx, to: String) -> Result<String, Failure> {
    ctx.send_event(to.clone(), "ping", &7u32).await?;
    let () = ctx.wait_event("more").await?;
    ctx.send_event(to.clone(), "ping", &0u32).await?;
    match ctx.send_event("nobody", "ping", &1u32).await {
        Err(durable::SendError::NotFound(id)) => Ok(format!("no {id}")),
        other => Err(Failure::new(format!("expected NotFound, got {other:?}"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_by_an_orchestration_arrive_once_across_a_restart() {
    let schema = TempSchema::new("send");
    let open = |store| {
        Runtime::builder(dir("send"))
            .store(Arc::new(store))
            .orchestration(collector)
            .orchestration(pinger)
            .open()
    };
    {
        let rt = open(schema.store()).await.unwrap();
        rt.start(collector, "to", 0).await.unwrap();
        rt.start(pinger, "from", "to".to_owned()).await.unwrap();
        eventually("the sender parked after its first send", || {
            pending(&rt, "from").as_deref() == Some("event `more`")
        })
        .await;
        rt.shutdown().await;
    }
    // A new process: the first send is not made again, the second is made once.
    let rt = open(schema.store()).await.unwrap();
    rt.raise_event("from", "more", &()).await.unwrap();
    let sent = rt.handle::<pinger>("from").wait_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(sent.unwrap(), "no nobody");
    let got = rt.handle::<collector>("to").wait_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(got.unwrap(), vec![7], "each event arrived once");
    rt.shutdown().await;
}

/// Holds about 100 KB it does not change across `rounds` events.
#[orchestration]
async fn keeps_a_list(ctx: Ctx, rounds: u64) -> Result<u64, Failure> {
    let list: Vec<String> = (0..1_000).map(|i| format!("{i:0>100}")).collect();
    let mut acc = 0u64;
    for _ in 0..rounds {
        acc += ctx.wait_event::<u64>("more").await?;
    }
    Ok(acc + list.iter().map(|s| s.len() as u64).sum::<u64>())
}

/// The keys of instance `id`'s frame slots.
fn slots_of(store: &dyn Store, id: &str) -> usize {
    let mut prefix = id.as_bytes().to_vec();
    prefix.push(0xff);
    let page = store.scan(durable::store::Space::Slots, Some(&prefix), 1_000).unwrap();
    page.iter().take_while(|(k, _)| k.starts_with(&prefix)).count()
}

async fn open_slots_runtime(store: &Arc<durable_postgres::PgStore>) -> Runtime {
    let builder = Runtime::builder(dir("slots")).store(store.clone());
    builder.orchestration(keeps_a_list).open().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_unchanged_locals_go_to_slots_and_read_back_on_another_runtime() {
    let schema = TempSchema::new("slots");
    let steps = |rt: &Runtime| rt.status("big").unwrap().map_or(0, |s| s.steps);
    let store = Arc::new(schema.store());
    let rt = open_slots_runtime(&store).await;
    rt.start(keeps_a_list, "big", 6).await.unwrap();
    eventually("parked", || steps(&rt) == 1).await;
    for n in 2..=5 {
        rt.raise_event("big", "more", &1u64).await.unwrap();
        eventually("a step", || steps(&rt) == n).await;
    }
    let record = store.read("big").unwrap().unwrap().record.len();
    assert!(record < 2_000, "the record names its slots instead: {record} bytes");
    assert!(slots_of(store.as_ref(), "big") > 0);
    rt.shutdown().await;
    drop(rt);

    let store = Arc::new(schema.store());
    let rt = open_slots_runtime(&store).await;
    for _ in 0..2 {
        rt.raise_event("big", "more", &1u64).await.unwrap();
    }
    let out = rt.handle::<keeps_a_list>("big").wait_timeout(Duration::from_secs(20)).await;
    assert_eq!(out.unwrap().unwrap(), 6 + 100_000);
    eventually("its slots deleted", || slots_of(store.as_ref(), "big") == 0).await;
    rt.shutdown().await;
}
