//! Changing an orchestration while instances are parked in it: each case runs "v1" until it
//! waits at a suspension point, reopens the database with only "v2" registered under the same
//! name, and checks that the instance resumes, or is refused with a precise message and resumes
//! once v1 is back.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::time::Duration;

use durable::{
    Ctx, Failure, InstanceError, InstanceState, Orchestration, OrchestrationOutput, Runtime,
    RuntimeBuilder, activity, durable_fn, orchestration,
};
use support::harness::{fresh_db, open};

#[activity]
async fn inc(x: u64) -> Result<u64, String> {
    Ok(x + 1)
}

type Out<O> = <<O as Orchestration>::Output as OrchestrationOutput>::Ok;
type Err<O> = <<O as Orchestration>::Output as OrchestrationOutput>::Err;

/// Runs `v1` as `id` until it waits for the event `go`, then reopens with `v2` only, raises
/// `go` with 100 and returns v2's view of the result.
async fn park_then_swap<V1, V2>(
    name: &str,
    v1: fn() -> V1,
    input: V1::Input,
    v2: fn() -> V2,
) -> (std::path::PathBuf, Result<Out<V2>, InstanceError<Err<V2>>>)
where
    V1: Orchestration,
    V2: Orchestration,
{
    let db = fresh_db(name);
    let rt = open(|| Runtime::builder(&db).orchestration(v1)).await;
    rt.start(v1, name, input).await.unwrap();
    let mut parked = false;
    for _ in 0..2000 {
        if rt.status(name).unwrap().and_then(|s| s.pending).is_some_and(|p| p.starts_with("event"))
        {
            parked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(parked, "{name}: v1 never waited for the event");
    rt.shutdown().await;
    drop(rt);
    let rt = open(|| Runtime::builder(&db).orchestration(v2)).await;
    rt.raise_event(name, "go", &100u64).await.unwrap();
    let out = rt.handle::<V2>(name).wait_timeout(Duration::from_secs(10)).await.expect("a result");
    rt.shutdown().await;
    (db, out)
}

fn incompatible<E: std::fmt::Debug>(r: Result<u64, InstanceError<E>>) -> String {
    match r {
        Err(InstanceError::Incompatible(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// A step added after the current point: resumes, and runs the new step.
#[orchestration(name = "added_after")]
async fn added_after_v1(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let e: u64 = ctx.wait_event("go").await?;
    Ok(a + e)
}
#[orchestration(name = "added_after")]
async fn added_after_v2(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let e: u64 = ctx.wait_event("go").await?;
    let b = ctx.call(inc, a + e).await?;
    Ok(b * 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_added_after_the_current_point_resumes() {
    let (_, out) = park_then_swap("added_after", added_after_v1, 1, added_after_v2).await;
    assert_eq!(out.unwrap(), 103_000);
}

// An edit before the current point (another input, a new statement, a comment): resumes.
#[orchestration(name = "edit_before")]
async fn edit_before_v1(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let e: u64 = ctx.wait_event("go").await?;
    Ok(a + e)
}
#[orchestration(name = "edit_before")]
async fn edit_before_v2(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    // A log line and another input expression, above the parked point.
    println!("starting with {x}");
    let a = ctx.call(inc, x * 10).await?;

    let e: u64 = ctx.wait_event("go").await?;
    Ok(a + e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_before_the_current_point_resumes() {
    let (_, out) = park_then_swap("edit_before", edit_before_v1, 1, edit_before_v2).await;
    assert_eq!(out.unwrap(), 102, "the stored `a` (from v1) is used");
}

// A changed activity input expression after the current point: resumes with the new one.
#[orchestration(name = "changed_input")]
async fn changed_input_v1(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let e: u64 = ctx.wait_event("go").await?;
    let b = ctx.call(inc, a + e).await?;
    Ok(b)
}
#[orchestration(name = "changed_input")]
async fn changed_input_v2(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let e: u64 = ctx.wait_event("go").await?;
    let b = ctx.call(inc, (a + e) * 2).await?;
    Ok(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_input_after_the_current_point_resumes() {
    let (_, out) = park_then_swap("changed_input", changed_input_v1, 1, changed_input_v2).await;
    assert_eq!(out.unwrap(), 205);
}

// A new local live at the current point: refused, naming it; v1 finishes it later.
#[orchestration(name = "new_local")]
async fn new_local_v1(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let e: u64 = ctx.wait_event("go").await?;
    Ok(a + e)
}
#[orchestration(name = "new_local")]
async fn new_local_v2(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let bonus = a * 3;
    let e: u64 = ctx.wait_event("go").await?;
    Ok(a + e + bonus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_live_local_is_refused_and_resumes_under_the_old_build() {
    let (db, out) = park_then_swap("new_local", new_local_v1, 1, new_local_v2).await;
    let message = incompatible(out);
    for part in ["new_local", "wait_event#0", "evolution.rs", "`bonus: u64` is now stored"] {
        assert!(message.contains(part), "missing {part:?} in: {message}");
    }
    // It stays stored, refused, until a compatible build runs it.
    let rt = open(|| Runtime::builder(&db).orchestration(new_local_v2)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        rt.status("new_local").unwrap().unwrap().state,
        InstanceState::Incompatible { .. }
    ));
    rt.shutdown().await;
    drop(rt);
    let rt = open(|| Runtime::builder(&db).orchestration(new_local_v1)).await;
    let out =
        rt.handle::<new_local_v1>("new_local").wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(out.unwrap(), 102, "the event taken before the refusal is not lost");
}

// A retyped local: refused, with both types.
#[orchestration(name = "retyped")]
async fn retyped_v1(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let e: u64 = ctx.wait_event("go").await?;
    Ok(a + e)
}
#[orchestration(name = "retyped")]
async fn retyped_v2(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = u32::try_from(ctx.call(inc, x).await?).unwrap_or(0);
    let e: u64 = ctx.wait_event("go").await?;
    Ok(u64::from(a) + e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retyped_local_is_refused() {
    let (_, out) = park_then_swap("retyped", retyped_v1, 1, retyped_v2).await;
    let message = incompatible(out);
    assert!(message.contains("`a` changed type from `u64` to `u32`"), "{message}");
}

// A deleted suspension point: refused.
#[orchestration(name = "deleted")]
async fn deleted_v1(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    let e: u64 = ctx.wait_event("go").await?;
    Ok(a + e)
}
#[orchestration(name = "deleted")]
async fn deleted_v2(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(inc, x).await?;
    Ok(a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_suspension_point_is_refused() {
    let (_, out) = park_then_swap("deleted", deleted_v1, 1, deleted_v2).await;
    let message = incompatible(out);
    assert!(
        message.contains("`wait_event#0`") && message.contains("does not exist in this build"),
        "{message}"
    );
}

// The same orchestration moved to another module: its stored name does not change.
mod old_place {
    use super::*;
    #[orchestration]
    pub(crate) async fn moving(ctx: Ctx, x: u64) -> Result<u64, Failure> {
        let a = ctx.call(inc, x).await?;
        let e: u64 = ctx.wait_event("go").await?;
        Ok(a + e)
    }
}
mod new_place {
    use super::*;
    #[orchestration]
    pub(crate) async fn moving(ctx: Ctx, x: u64) -> Result<u64, Failure> {
        let a = ctx.call(inc, x).await?;
        let e: u64 = ctx.wait_event("go").await?;
        Ok(a + e + 1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_module_strands_nothing() {
    let (_, out) = park_then_swap("moving", old_place::moving, 1, new_place::moving).await;
    assert_eq!(out.unwrap(), 103);
}

// Side by side: in-flight instances finish on their version, new ones start on the newest.
#[orchestration(name = "pricing", version = 1)]
async fn pricing_v1(ctx: Ctx, x: u64) -> Result<String, Failure> {
    let e: u64 = ctx.wait_event("go").await?;
    Ok(format!("v1: {}", x + e))
}
#[orchestration(name = "pricing", version = 2)]
async fn pricing_v2(ctx: Ctx, x: u64) -> Result<String, Failure> {
    let bonus = ctx.call(inc, x).await?;
    let e: u64 = ctx.wait_event("go").await?;
    Ok(format!("v2: {}", bonus + e))
}

fn both(db: &std::path::Path) -> RuntimeBuilder {
    Runtime::builder(db).orchestration(pricing_v1).orchestration(pricing_v2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_side_by_side() {
    let db = fresh_db("versions");
    let rt = open(|| Runtime::builder(&db).orchestration(pricing_v1)).await;
    rt.start(pricing_v1, "old", 1).await.unwrap();
    rt.shutdown().await;
    drop(rt);
    let rt = open(|| both(&db)).await;
    // Started through either type, a new instance runs the newest version.
    rt.start(pricing_v1, "new", 1).await.unwrap();
    for id in ["old", "new"] {
        rt.raise_event(id, "go", &10u64).await.unwrap();
    }
    let old = rt.handle::<pricing_v1>("old").wait_timeout(Duration::from_secs(10)).await.unwrap();
    let new = rt.handle::<pricing_v2>("new").wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(old.unwrap(), "v1: 11");
    assert_eq!(new.unwrap(), "v2: 12");
    assert_eq!(rt.status("old").unwrap().unwrap().version, 1);
    assert_eq!(rt.status("new").unwrap().unwrap().version, 2);
    rt.shutdown().await;
    drop(rt);
    // With only v2 registered, a v1 instance waits for its version instead of running on v2.
    let rt = open(|| Runtime::builder(&db).orchestration(pricing_v1)).await;
    rt.start(pricing_v1, "draining", 5).await.unwrap();
    rt.shutdown().await;
    drop(rt);
    let rt = open(|| Runtime::builder(&db).orchestration(pricing_v2)).await;
    rt.raise_event("draining", "go", &1u64).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rt.status("draining").unwrap().unwrap().state, InstanceState::Unregistered);
    rt.register(pricing_v1);
    let out =
        rt.handle::<pricing_v1>("draining").wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(out.unwrap(), "v1: 6");
}

// Inside a durable function: the nested frame is checked like the orchestration's own.
mod in_fn_v1 {
    use super::*;

    #[durable_fn]
    pub async fn part(ctx: &Ctx, x: u64) -> Result<u64, Failure> {
        let a = ctx.call(inc, x).await?;
        let e: u64 = ctx.wait_event("go").await?;
        Ok(a + e)
    }

    #[orchestration(name = "in_fn_retyped")]
    pub async fn retyped(ctx: Ctx, x: u64) -> Result<u64, Failure> {
        let r = part(&ctx, x).await?;
        Ok(r)
    }

    #[orchestration(name = "in_fn_added")]
    pub async fn added(ctx: Ctx, x: u64) -> Result<u64, Failure> {
        let r = part(&ctx, x).await?;
        Ok(r)
    }
}

mod in_fn_v2 {
    use super::*;

    #[durable_fn]
    pub async fn part(ctx: &Ctx, x: u64) -> Result<u64, Failure> {
        let a = u32::try_from(ctx.call(inc, x).await?).unwrap_or(0);
        let e: u64 = ctx.wait_event("go").await?;
        Ok(u64::from(a) + e)
    }

    #[orchestration(name = "in_fn_retyped")]
    pub async fn retyped(ctx: Ctx, x: u64) -> Result<u64, Failure> {
        let r = part(&ctx, x).await?;
        Ok(r)
    }
}

mod in_fn_v3 {
    use super::*;

    /// v1 with a step added after the point where instances wait.
    #[durable_fn]
    pub async fn part(ctx: &Ctx, x: u64) -> Result<u64, Failure> {
        let a = ctx.call(inc, x).await?;
        let e: u64 = ctx.wait_event("go").await?;
        let b = ctx.call(inc, a + e).await?;
        Ok(b)
    }

    #[orchestration(name = "in_fn_added")]
    pub async fn added(ctx: Ctx, x: u64) -> Result<u64, Failure> {
        let r = part(&ctx, x).await?;
        Ok(r)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retyped_local_inside_a_durable_function_is_refused() {
    let (_, out) = park_then_swap("in_fn_retyped", in_fn_v1::retyped, 1, in_fn_v2::retyped).await;
    let message = incompatible(out);
    assert!(message.contains("in durable function `evolution::in_fn_v2::part`"), "{message}");
    assert!(message.contains("`a` changed type from `u64` to `u32`"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_added_inside_a_durable_function_resumes() {
    let (_, out) = park_then_swap("in_fn_added", in_fn_v1::added, 1, in_fn_v3::added).await;
    assert_eq!(out.unwrap(), 103);
}
