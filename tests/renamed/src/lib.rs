//! `durable` under the name `dur`: the macros' expansion must name it `::dur`.
#![deny(warnings)]

use dur::{Ctx, Failure, activity, orchestration};

/// Adds.
#[activity]
pub async fn add(x: i64, y: i64) -> Result<i64, String> {
    Ok(x + y)
}

/// Adds twice.
#[orchestration]
pub async fn twice(ctx: Ctx, x: i64) -> Result<i64, Failure> {
    let once = ctx.call(add, (x, x)).await?;
    let sum = ctx.call(add, (once, once)).await?;
    Ok(sum)
}

/// The renamed crate's items are usable as usual.
pub fn name() -> &'static str {
    <twice as dur::Orchestration>::NAME
}
