//! Every control-flow construct the lowering supports, stopped at every suspension point in
//! turn and resumed from its checkpoint.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use durable::{ActivityContext, Ctx, Failure, activity, orchestration};
use serde::{Deserialize, Serialize};
use support::harness::{activity_body, stop_at_every_point};

#[activity]
async fn add(ctx: ActivityContext, x: i64, y: i64) -> Result<i64, String> {
    activity_body(&ctx).await;
    Ok(x + y)
}

#[activity]
async fn echo(ctx: ActivityContext, s: String) -> Result<String, String> {
    activity_body(&ctx).await;
    Ok(s)
}

#[activity]
async fn fail_if_negative(ctx: ActivityContext, x: i64) -> Result<i64, String> {
    activity_body(&ctx).await;
    if x < 0 { Err(format!("{x} is negative")) } else { Ok(x) }
}

#[orchestration]
async fn branches(ctx: Ctx, n: i64) -> Result<Vec<String>, Failure> {
    let mut log = Vec::new();
    if n > 10 {
        let a = ctx.call(add, (n, 1)).await?;
        log.push(format!("big {a}"));
    } else if n > 5 {
        log.push("medium".to_string());
        let b = ctx.call(add, (n, 2)).await?;
        log.push(format!("medium {b}"));
    } else {
        log.push("small".into());
    }
    let label =
        if n % 2 == 0 { ctx.call(echo, "even".to_string()).await? } else { "odd".to_string() };
    log.push(label);
    let after = ctx.call(add, (n, 100)).await?;
    log.push(format!("after {after}"));
    Ok(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_else_chains() {
    let (out, _) = stop_at_every_point(branches, "if-big", 12).await;
    assert_eq!(out, ["big 13", "even", "after 112"]);
    let (out, _) = stop_at_every_point(branches, "if-medium", 7).await;
    assert_eq!(out, ["medium", "medium 9", "odd", "after 107"]);
    let (out, steps) = stop_at_every_point(branches, "if-small", 4).await;
    assert_eq!(out, ["small", "even", "after 104"]);
    assert_eq!(steps, 3);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Command {
    Add(i64, i64),
    Say(String),
    Twice(i64),
    Nothing,
}

#[orchestration]
async fn matches(ctx: Ctx, cmds: Vec<Command>) -> Result<Vec<String>, Failure> {
    let mut out = vec![];
    for cmd in cmds {
        let line = match cmd {
            Command::Add(a, b) if a == b => {
                let d = ctx.call(add, (a, b)).await?;
                format!("double {d}")
            }
            Command::Add(a, b) => {
                let s = ctx.call(add, (a, b)).await?;
                format!("sum {s}")
            }
            Command::Say(s) | Command::Say(s) if s.is_empty() => "silence".to_string(),
            Command::Say(s) => ctx.call(echo, s).await?,
            Command::Twice(x) => {
                let once = ctx.call(add, (x, 0)).await?;
                let twice = ctx.call(add, (once, x)).await?;
                format!("twice {twice}")
            }
            Command::Nothing => continue,
        };
        out.push(line);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_with_guards_bindings_and_or_patterns() {
    let cmds = vec![
        Command::Add(2, 2),
        Command::Add(1, 5),
        Command::Nothing,
        Command::Say(String::new()),
        Command::Say("hi".into()),
        Command::Twice(21),
    ];
    let (out, steps) = stop_at_every_point(matches, "match", cmds).await;
    assert_eq!(out, ["double 4", "sum 6", "silence", "hi", "twice 42"]);
    assert_eq!(steps, 6);
}

#[orchestration]
async fn loops(ctx: Ctx, limit: i64) -> Result<(i64, i64, i64, Vec<i64>, i64), Failure> {
    // loop with break value
    let mut i = 0;
    let first_big = loop {
        let v = ctx.call(add, (i, i)).await?;
        i += 1;
        if v > limit {
            break v;
        }
    };
    // while with continue
    let mut n = 0;
    let mut sum = 0;
    while n < 5 {
        n += 1;
        if n == 3 {
            continue;
        }
        sum = ctx.call(add, (sum, n)).await?;
    }
    // while let over a stack
    let mut stack = vec![1, 2, 3];
    let mut popped = 0;
    while let Some(top) = stack.pop() {
        popped = ctx.call(add, (popped, top)).await?;
    }
    // for over a Vec, with labelled break out of an inner loop
    let mut seen = Vec::new();
    'outer: for x in vec![10, 20, 30, 40] {
        for y in 0..3 {
            if x == 40 {
                break 'outer;
            }
            if y == 1 {
                continue 'outer;
            }
            let s = ctx.call(add, (x, y)).await?;
            seen.push(s);
        }
    }
    Ok((first_big, sum, popped, seen, i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_with_break_continue_and_labels() {
    let (out, _) = stop_at_every_point(loops, "loops", 5).await;
    assert_eq!(out, (6, 12, 6, vec![10, 20, 30], 4));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pair {
    left: i64,
    right: i64,
}

#[orchestration]
async fn expressions(ctx: Ctx, x: i64) -> Result<i64, Failure> {
    // awaits feeding one expression, in evaluation order
    let total = ctx.call(add, (x, 1)).await? + ctx.call(add, (x, 2)).await? * 2;
    // early return
    if total < 0 {
        return Ok(-1);
    }
    // `?` turning an activity error into the orchestration's error, handled here
    let checked = match ctx.call(fail_if_negative, -x).await {
        Ok(v) => v,
        Err(e) => {
            let msg = e.to_string();
            msg.len() as i64
        }
    };
    // shadowing, destructuring, blocks, closures and iterator chains without awaits
    let x = x * 2;
    let (a, b) = (ctx.call(add, (x, 0)).await?, 3);
    let Pair { left, right } = Pair { left: a, right: b };
    let [p, q, ..] = [left, right, 0, 0];
    let squares: i64 = (1..=3).map(|v| v * v).sum();
    let block = {
        let inner = ctx.call(add, (p, q)).await?;
        inner + 1
    };
    let scale = |v: i64| v * 10;
    let mut acc = 0;
    acc += scale(block);
    acc += ctx.call(add, (acc, squares)).await?;
    Ok(total + checked + acc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_returns_and_patterns() {
    let (out, steps) = stop_at_every_point(expressions, "exprs", 5).await;
    // total = 6 + 7*2 = 20; checked = len("-5 is negative") = 14;
    // x = 10, a = 10, p = 10, q = 3, block = 14, acc = 140 + (140 + 14) = 294
    assert_eq!(out, 20 + 14 + 294);
    assert_eq!(steps, 7);
}

#[orchestration]
async fn early_error(ctx: Ctx, x: i64) -> Result<i64, Failure> {
    let a = ctx.call(add, (x, 1)).await?;
    let b = ctx.call(fail_if_negative, a).await?;
    Ok(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_mark_fails_the_instance_with_the_activity_error() {
    let db = support::harness::fresh_db("early-error");
    let rt =
        support::harness::open(|| durable::Runtime::builder(&db).orchestration(early_error)).await;
    let h = rt.start(early_error, "early-error", -5).await.unwrap();
    match h.wait().await {
        Err(durable::InstanceError::Failed { error, .. }) => {
            assert_eq!(error.message(), "-4 is negative")
        }
        other => panic!("{other:?}"),
    }
    let s = rt.status("early-error").unwrap().unwrap();
    assert!(matches!(s.state, durable::InstanceState::Failed { .. }));
    // The stored failure reads back the same after a restart.
    rt.shutdown().await;
    drop((h, rt));
    let rt =
        support::harness::open(|| durable::Runtime::builder(&db).orchestration(early_error)).await;
    match rt.handle::<early_error>("early-error").wait().await {
        Err(durable::InstanceError::Failed { error, .. }) => {
            assert_eq!(error.message(), "-4 is negative")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rt.start(early_error, "early-error", 99).await.unwrap().id(), "early-error");
}

#[orchestration]
async fn generic_pair<T: durable::Persistable + Clone + Send + Sync>(
    ctx: Ctx,
    x: T,
    n: i64,
) -> Result<(T, i64), Failure> {
    let s = ctx.call(add, (n, n)).await?;
    let copy = x.clone();
    // A local may share its name with an activity: `add` is a function, not a unit struct.
    let add = s + 1;
    let t = ctx.call(echo, format!("{add}")).await?;
    Ok((copy, t.parse().unwrap_or(-1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_orchestrations() {
    let (out, steps) =
        stop_at_every_point(generic_pair::<String>, "generic", ("x".to_string(), 20)).await;
    assert_eq!(out, ("x".to_string(), 41));
    assert_eq!(steps, 3);
    let (out, _) =
        stop_at_every_point(generic_pair::<Vec<u8>>, "generic-vec", (vec![1, 2], 1)).await;
    assert_eq!(out, (vec![1, 2], 3));
}
