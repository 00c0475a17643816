//! Durable functions: `#[durable_fn]` code called from orchestrations and from each other,
//! stopped and resumed at every checkpoint, nested frames included.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::sync::Mutex;

use durable::{ActivityContext, Ctx, Failure, Runtime, activity, durable_fn, orchestration};
use serde::{Deserialize, Serialize};
use support::harness::{activity_body, fresh_db, open, stop_at_every_point};

/// What the compensations undid, per instance, in order.
static UNDONE: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn undone(instance: &str) -> Vec<String> {
    UNDONE.lock().unwrap().iter().filter(|(i, _)| i == instance).map(|(_, w)| w.clone()).collect()
}

#[activity]
async fn reserve(ctx: ActivityContext, what: String, fail: bool) -> Result<String, String> {
    activity_body(&ctx).await;
    if fail { Err(format!("no {what} available")) } else { Ok(format!("{what}-confirmed")) }
}

#[activity]
async fn release(ctx: ActivityContext, confirmation: String) -> Result<(), String> {
    activity_body(&ctx).await;
    UNDONE.lock().unwrap().push((ctx.instance_id().to_owned(), confirmation));
    Ok(())
}

#[activity]
async fn add(ctx: ActivityContext, a: u64, b: u64) -> Result<u64, String> {
    activity_body(&ctx).await;
    Ok(a + b)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Trip {
    steps: Vec<String>,
    fail_at: Option<String>,
}

/// One booking: a durable function whose `?` returns its own error type.
#[durable_fn]
async fn book(ctx: &Ctx, what: String, fail: bool) -> Result<String, String> {
    let confirmation = ctx.call(reserve, (what.clone(), fail)).await.map_err(|e| e.to_string())?;
    Ok(confirmation)
}

/// Undoes what was booked, last first.
#[durable_fn]
async fn compensate(ctx: &Ctx, booked: Vec<String>) -> usize {
    let mut undone = 0;
    for confirmation in booked.into_iter().rev() {
        if ctx.call(release, confirmation).await.is_ok() {
            undone += 1;
        }
    }
    undone
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Outcome {
    Booked(String),
    Compensated { reason: String, released: usize },
}

/// A saga: book each step; on a failure, compensate what was booked, in reverse order.
#[orchestration]
async fn trip(ctx: Ctx, trip: Trip) -> Result<Outcome, Failure> {
    let Trip { steps, fail_at } = trip;
    let mut booked: Vec<String> = Vec::new();
    for step in steps {
        let fail = fail_at.as_deref() == Some(step.as_str());
        match book(&ctx, step, fail).await {
            Ok(confirmation) => booked.push(confirmation),
            Err(reason) => {
                let released = compensate(&ctx, booked).await;
                return Ok(Outcome::Compensated { reason, released });
            }
        }
    }
    Ok(Outcome::Booked(booked.join(",")))
}

fn trip_input(fail_at: Option<&str>) -> Trip {
    Trip {
        steps: vec!["flight".into(), "hotel".into(), "car".into()],
        fail_at: fail_at.map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_books_every_step() {
    let db = fresh_db("composition-saga-ok");
    let rt = open(|| Runtime::builder(&db).orchestration(trip)).await;
    let out = rt.start(trip, "saga-ok", trip_input(None)).await.unwrap().wait().await.unwrap();
    assert_eq!(out, Outcome::Booked("flight-confirmed,hotel-confirmed,car-confirmed".into()));
    assert!(undone("saga-ok").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_compensates_in_reverse_order() {
    let db = fresh_db("composition-saga-fail");
    let rt = open(|| Runtime::builder(&db).orchestration(trip)).await;
    let out =
        rt.start(trip, "saga-fail", trip_input(Some("car"))).await.unwrap().wait().await.unwrap();
    assert_eq!(out, Outcome::Compensated { reason: "no car available".into(), released: 2 },);
    assert_eq!(undone("saga-fail"), ["hotel-confirmed", "flight-confirmed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_stopped_at_every_checkpoint_compensates_once() {
    // Every stop lands inside a durable function's frame (the orchestration awaits nothing
    // else): the nested frame is decoded after each reopen, and the activities the functions
    // call are registered through the orchestration alone.
    let (out, steps) =
        stop_at_every_point(trip, "composition-saga-stops", trip_input(Some("car"))).await;
    assert_eq!(out, Outcome::Compensated { reason: "no car available".into(), released: 2 });
    assert_eq!(steps, 6);
    for k in 1..steps {
        assert_eq!(
            undone(&format!("composition-saga-stops-stop{k}")),
            ["hotel-confirmed", "flight-confirmed"],
            "stopped after checkpoint {k}"
        );
    }
}

/// Durable functions calling durable functions, and themselves.
#[durable_fn]
async fn sum_to(ctx: &Ctx, n: u64) -> Result<u64, String> {
    if n == 0 {
        return Ok(0);
    }
    let rest = sum_to(ctx, n - 1).await?;
    let total = ctx.call(add, (rest, n)).await.map_err(|e| e.to_string())?;
    Ok(total)
}

#[durable_fn]
async fn twice(ctx: &Ctx, n: u64) -> Result<(u64, u64), String> {
    let a = sum_to(ctx, n).await?;
    let local = a * 10;
    let b = sum_to(ctx, n + 1).await?;
    Ok((local, b))
}

#[orchestration]
async fn nested(ctx: Ctx, n: u64) -> Result<(u64, u64, u64), String> {
    let before = ctx.call(add, (n, 0)).await.map_err(|e| e.to_string())?;
    let (a, b) = twice(&ctx, before).await?;
    Ok((before, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_and_nested_durable_functions_resume_at_every_checkpoint() {
    let (out, steps) = stop_at_every_point(nested, "composition-nested", 3).await;
    assert_eq!(out, (3, 60, 10));
    // 1 + (3 levels + 4 levels) of `add`.
    assert_eq!(steps, 9);
}

/// A durable function that awaits nothing runs within its caller's step.
#[durable_fn]
async fn pure(_ctx: &Ctx, x: u64) -> u64 {
    x * 3
}

#[orchestration]
async fn immediate(ctx: Ctx, x: u64) -> Result<u64, String> {
    let y = pure(&ctx, x).await;
    let z = ctx.call(add, (y, 1)).await?;
    Ok(z)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_function_without_awaits_adds_no_checkpoint() {
    let (out, steps) = stop_at_every_point(immediate, "composition-immediate", 4).await;
    assert_eq!(out, 13);
    assert_eq!(steps, 2);
}
