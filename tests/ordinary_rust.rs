//! Ordinary Rust in, the same result out: bodies that compute one thing as a plain `async fn`
//! compute the same as orchestrations, stopped at every suspension point and resumed.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use durable::{ActivityContext, Ctx, Failure, activity, orchestration};
use support::harness::{activity_body, stop_at_every_point};

#[activity]
async fn add(ctx: ActivityContext, x: i64, y: i64) -> Result<i64, String> {
    activity_body(&ctx).await;
    Ok(x + y)
}

// ----- items keep their block scope -----

const RATE: i64 = 10;

#[orchestration]
async fn block_items(ctx: Ctx, x: i64) -> Result<(i64, i64, i64, i64), Failure> {
    let base = RATE;
    let inner = {
        const RATE: i64 = 20;
        let a = ctx.call(add, (x, RATE)).await?;
        a + RATE
    };
    let branch = if x > 0 {
        use std::cmp::max as pick;
        const STEP: i64 = 1;
        let b = ctx.call(add, (x, STEP)).await?;
        pick(b, STEP)
    } else {
        use std::cmp::min as pick;
        const STEP: i64 = 2;
        let b = ctx.call(add, (x, STEP)).await?;
        pick(b, STEP)
    };
    let offset = 100;
    macro_rules! shifted {
        ($v:expr) => {
            $v + offset
        };
    }
    let c = ctx.call(add, (x, 1)).await?;
    Ok((base, inner, branch, shifted!(c)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_in_a_block_keep_the_blocks_scope() {
    let (out, _) = stop_at_every_point(block_items, "items", 1).await;
    assert_eq!(out, (10, 41, 2, 102));
    let (out, _) = stop_at_every_point(block_items, "items-neg", -5).await;
    assert_eq!(out, (10, 35, -3, 96));
}
