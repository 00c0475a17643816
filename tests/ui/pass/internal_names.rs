//! User locals named like the macro's own identifiers do not collide with them.
#![deny(warnings)]

use durable::{Ctx, Failure, Orchestration, activity, orchestration};

#[activity]
async fn add(x: i64, y: i64) -> Result<i64, String> {
    Ok(x + y)
}

#[allow(non_snake_case)]
#[orchestration]
async fn internal_names(ctx: Ctx, __durable_input: i64) -> Result<i64, Failure> {
    let __durable_state = 1;
    let __durable_w = 2;
    let __durable_frame = 3;
    let __durable_completion = 4;
    let __durable_op = 5;
    let __durable_value = 6;
    let B0 = ctx.call(add, (__durable_input, __durable_state)).await?;
    let __DurableState = ctx.call(add, (B0, __durable_w)).await?;
    let mut total = __DurableState + __durable_frame + __durable_completion;
    for __durable_r in 0..2 {
        total = ctx.call(add, (total, __durable_r + __durable_op)).await?;
    }
    '__durable_machine: loop {
        total = ctx.call(add, (total, __durable_value)).await?;
        break '__durable_machine;
    }
    Ok(total)
}

pub(crate) fn main() {
    assert_eq!(<internal_names as Orchestration>::NAME, "internal_names");
}
