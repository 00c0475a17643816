//! "Ordinary Rust in, the same result out": hash maps, activities called through helpers,
//! `#[serde(skip)]` fields, `Drop`, and orchestrations with their own error type. Each test
//! compares with what the same body gives as plain Rust, without a restart and, where a restart
//! changes what is documented, after one.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use durable::{
    ActivityContext, ActivityError, Call, Ctx, Failure, InstanceState, Runtime, activity,
    orchestration,
};
use serde::{Deserialize, Serialize};
use support::harness::{activity_body, fresh_db, open, stop_at_every_point};

#[activity]
async fn add(ctx: ActivityContext, x: i64, y: i64) -> Result<i64, String> {
    activity_body(&ctx).await;
    Ok(x + y)
}

#[activity]
async fn upper(ctx: ActivityContext, s: String) -> Result<String, String> {
    activity_body(&ctx).await;
    Ok(s.to_uppercase())
}

// ----- 1. hash collections alive across an await -----

#[orchestration]
async fn hash_map_across_await(ctx: Ctx, n: i64) -> Result<(usize, i64, usize), Failure> {
    let m: HashMap<String, i64> = (0..n).map(|i| (format!("k{i}"), i * 10)).collect();
    let s: HashSet<i64> = (0..n).collect();
    let one = ctx.call(add, (1, 1)).await?;
    let total = m.values().sum::<i64>() + one;
    ctx.call(add, (2, 2)).await?;
    Ok((m.len(), total, s.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_map_alive_across_an_await_round_trips() {
    let (out, steps) = stop_at_every_point(hash_map_across_await, "sem-hashmap-5", 5).await;
    assert_eq!(out, (5, 102, 5));
    assert_eq!(steps, 3);
    let (out, _) = stop_at_every_point(hash_map_across_await, "sem-hashmap-200", 200).await;
    assert_eq!(out, (200, 199_002, 200));
}

// ----- 2. activities called however the call is written -----

fn shout(ctx: &Ctx, s: String) -> Call<upper> {
    ctx.call(upper, s)
}

#[orchestration]
async fn through_helper(ctx: Ctx, s: String) -> Result<String, Failure> {
    let first = shout(&ctx, s).await?;
    let c = &ctx;
    let second = c.call(upper, format!("{first}-again")).await?;
    Ok(second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_called_through_a_helper_needs_no_registration() {
    let db = fresh_db("sem-helper-plain");
    let rt = open(|| Runtime::builder(&db).orchestration(through_helper)).await;
    let out = rt
        .start(through_helper, "sem-helper-plain", "abc".to_string())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(out, "ABC-AGAIN");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_called_through_a_helper_resumes_after_a_restart() {
    // The first process issues the call and stops before the activity runs; the second knows
    // the activity only from the builder's registration.
    let db = fresh_db("sem-helper-restart");
    let id = "sem-helper-restart";
    let reached = std::sync::Arc::new(tokio::sync::Notify::new());
    let rt = {
        let reached = reached.clone();
        open(move || {
            let reached = reached.clone();
            Runtime::builder(&db).orchestration(through_helper).on_step(move |e| {
                if e.step == 1 {
                    support::harness::freeze(&e.instance);
                    reached.notify_one();
                }
            })
        })
        .await
    };
    let notified = reached.notified();
    rt.start(through_helper, id, "x".to_string()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), notified).await.unwrap();
    rt.shutdown().await;
    drop(rt);
    support::harness::thaw(id);
    let db = fresh_db_keep("sem-helper-restart");
    let rt = open(|| Runtime::builder(&db).orchestration(through_helper).activity(upper)).await;
    let out = rt
        .handle::<through_helper>(id)
        .wait_timeout(Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "X-AGAIN");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_call_of_an_unknown_activity_waits_for_its_registration() {
    // As above, but the second process does not register `upper` up front: the instance waits
    // (instead of failing the call) until the activity is registered.
    let db = fresh_db("sem-helper-late");
    let id = "sem-helper-late";
    let reached = std::sync::Arc::new(tokio::sync::Notify::new());
    let rt = {
        let reached = reached.clone();
        open(move || {
            let reached = reached.clone();
            Runtime::builder(&db).orchestration(through_helper).on_step(move |e| {
                if e.step == 1 {
                    support::harness::freeze(&e.instance);
                    reached.notify_one();
                }
            })
        })
        .await
    };
    let notified = reached.notified();
    rt.start(through_helper, id, "late".to_string()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), notified).await.unwrap();
    rt.shutdown().await;
    drop(rt);
    support::harness::thaw(id);
    let db = fresh_db_keep("sem-helper-late");
    let rt = open(|| Runtime::builder(&db).orchestration(through_helper)).await;
    let h = rt.handle::<through_helper>(id);
    assert!(h.wait_timeout(Duration::from_millis(300)).await.is_none(), "finished unregistered");
    let st = rt.status(id).unwrap().unwrap();
    assert_eq!(st.state, InstanceState::Running);
    assert_eq!(st.pending.as_deref(), Some("upper"));
    rt.register_activity(upper);
    let out = h.wait_timeout(Duration::from_secs(30)).await.unwrap().unwrap();
    assert_eq!(out, "LATE-AGAIN");
    rt.shutdown().await;
}

/// The directory `fresh_db` made, without emptying it.
fn fresh_db_keep(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(std::path::Path::parent).unwrap().join("scratch").join("dbs").join(name)
}

// ----- 6. `#[serde(skip)]` fields and 7. `Drop` -----

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct WithSkip {
    a: u32,
    #[serde(skip)]
    b: u32,
}

#[orchestration]
async fn skip_field(ctx: Ctx, a: u32) -> Result<(u32, u32), Failure> {
    let mut v = WithSkip { a, b: 3 };
    ctx.call(add, (1, 1)).await?;
    v.a *= 2;
    ctx.call(add, (2, 2)).await?;
    Ok((v.a, v.b))
}

fn drop_log() -> &'static Mutex<BTreeMap<String, Vec<String>>> {
    static L: OnceLock<Mutex<BTreeMap<String, Vec<String>>>> = OnceLock::new();
    L.get_or_init(Default::default)
}

fn drops(instance: &str) -> Vec<String> {
    drop_log().lock().unwrap().get(instance).cloned().unwrap_or_default()
}

/// Logs its name under its instance when dropped.
#[derive(Serialize, Deserialize)]
struct Noisy {
    instance: String,
    name: String,
}

impl Noisy {
    fn new(ctx: &Ctx, name: &str) -> Self {
        Noisy { instance: ctx.instance_id().to_owned(), name: name.to_owned() }
    }
}

impl Drop for Noisy {
    fn drop(&mut self) {
        drop_log()
            .lock()
            .unwrap()
            .entry(self.instance.clone())
            .or_default()
            .push(self.name.clone());
    }
}

#[orchestration]
async fn drops_in_place(ctx: Ctx, _x: u32) -> Result<Vec<String>, Failure> {
    let keep = Noisy::new(&ctx, "keep");
    ctx.call(add, (1, 1)).await?;
    {
        let guard = Noisy::new(&ctx, "guard");
        ctx.call(add, (2, 2)).await?;
        let _ = &guard;
    }
    ctx.call(add, (3, 3)).await?;
    let seen = drops(ctx.instance_id());
    let _ = &keep;
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serde_skip_field_is_kept_within_a_process() {
    let db = fresh_db("sem-skip");
    let rt = open(|| Runtime::builder(&db).orchestration(skip_field)).await;
    let out = rt.start(skip_field, "sem-skip", 3).await.unwrap().wait().await.unwrap();
    assert_eq!(out, (6, 3), "as plain Rust");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serde_skip_field_is_reset_by_a_restart() {
    // Documented: after a restart the locals are what the checkpoint stored; a skipped field
    // has its default.
    let out = run_with_restart_after(skip_field, "sem-skip-restart", 3, 1).await;
    assert_eq!(out, (6, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_runs_where_plain_rust_runs_it() {
    let db = fresh_db("sem-drop");
    let id = "sem-drop";
    let rt = open(|| Runtime::builder(&db).orchestration(drops_in_place)).await;
    let out = rt.start(drops_in_place, id, 0).await.unwrap().wait().await.unwrap();
    // Plain Rust: `guard` dropped at the end of its block, `keep` still alive at the snapshot.
    assert_eq!(out, ["guard"]);
    assert_eq!(drops(id), ["guard", "keep"]);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_after_a_restart_is_documented() {
    // Stopped after checkpoint 2 (`keep` and `guard` alive, waiting for `add(2, 2)`): the
    // shutdown drops the kept state like a runtime drops its futures, then the resumed step
    // works with decoded copies, dropped where plain Rust drops them.
    let id = "sem-drop-restart";
    let out = run_with_restart_after(drops_in_place, id, 0, 2).await;
    assert_eq!(out, ["keep", "guard", "guard"]);
    assert_eq!(drops(id), ["keep", "guard", "guard", "keep"]);
}

/// Runs `orch` to checkpoint `k`, shuts the runtime down, reopens it and waits for the result.
async fn run_with_restart_after<O>(orch: fn() -> O, id: &str, input: O::Input, k: u64) -> Out<O>
where
    O: durable::Orchestration,
{
    let db = fresh_db(id);
    let reached = std::sync::Arc::new(tokio::sync::Notify::new());
    let builder = {
        let (reached, db, id) = (reached.clone(), db.clone(), id.to_owned());
        move || {
            let (reached, id) = (reached.clone(), id.clone());
            Runtime::builder(&db).orchestration(orch).on_step(move |e| {
                if e.instance == id && e.step == k {
                    support::harness::freeze(&id);
                    reached.notify_one();
                }
            })
        }
    };
    let rt = open(&builder).await;
    let notified = reached.notified();
    rt.start(orch, id, input).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), notified).await.unwrap();
    rt.shutdown().await;
    drop(rt);
    support::harness::thaw(id);
    let rt = open(|| Runtime::builder(&db).orchestration(orch)).await;
    let out = rt
        .handle::<O>(id)
        .wait_timeout(Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    rt.shutdown().await;
    out
}

type Out<O> = <<O as durable::Orchestration>::Output as durable::OrchestrationOutput>::Ok;

// ----- 15. orchestrations with their own error type -----

#[orchestration]
async fn string_errors(ctx: Ctx, x: i64) -> Result<i64, String> {
    let y = ctx.call(add, (x, 1)).await?;
    Ok(y)
}

/// An application's error type.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum AppError {
    Activity(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Activity(m) => write!(f, "activity failed: {m}"),
        }
    }
}

// The documented pattern: allowed by the orphan rules, since `AppError` is local.
impl From<ActivityError<String>> for AppError {
    fn from(e: ActivityError<String>) -> Self {
        AppError::Activity(e.to_string())
    }
}

#[activity]
async fn refuse(ctx: ActivityContext, x: i64) -> Result<i64, String> {
    activity_body(&ctx).await;
    Err(format!("{x} refused"))
}

#[orchestration]
async fn app_errors(ctx: Ctx, x: i64) -> Result<i64, AppError> {
    let y = ctx.call(add, (x, 1)).await?;
    let z = ctx.call(refuse, y).await?;
    Ok(z)
}

#[orchestration]
async fn mapped_errors(ctx: Ctx, x: i64) -> Result<i64, AppError> {
    let y = ctx.call(refuse, x).await.map_err(|e| match e.into_failed() {
        Ok(refused) => AppError::Activity(refused),
        Err(other) => AppError::Activity(other.to_string()),
    })?;
    Ok(y)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_mark_converts_activity_errors_into_the_orchestrations_error() {
    let db = fresh_db("sem-errors");
    let rt = open(|| {
        Runtime::builder(&db)
            .orchestration(string_errors)
            .orchestration(app_errors)
            .orchestration(mapped_errors)
    })
    .await;
    let out = rt.start(string_errors, "sem-err-string", 4).await.unwrap().wait().await.unwrap();
    assert_eq!(out, 5);
    let h = rt.start(app_errors, "sem-err-app", 4).await.unwrap();
    let err = h.wait().await.unwrap_err();
    assert!(err.to_string().contains("activity failed: 5 refused"), "{err}");
    let st = rt.status("sem-err-app").unwrap().unwrap();
    assert!(matches!(st.state, InstanceState::Failed { .. }), "{:?}", st.state);
    let err = rt.start(mapped_errors, "sem-err-mapped", 7).await.unwrap().wait().await.unwrap_err();
    assert!(err.to_string().contains("activity failed: 7 refused"), "{err}");
    rt.shutdown().await;
}
