//! Module items named like identifiers a generated impl or match could use (`registry`,
//! `resume`, `v`, `f`…) do not capture them: a `const` in scope would turn a parameter or
//! binding of that name into a constant pattern. (Names starting with `__durable` are the
//! macros' own.)
#![deny(warnings)]
#![allow(non_upper_case_globals, dead_code)]

use durable::{Ctx, Failure, Orchestration, activity, orchestration};

const registry: u8 = 0;
const resume: u8 = 0;
const completion: u8 = 0;
const v: u8 = 0;
const e: u8 = 0;
const f: u8 = 0;
const r: u8 = 0;
const ctx_: u8 = 0;
const input: u8 = 0;
const frame: u8 = 0;
const state: u8 = 0;
const x_: u8 = 0;
const item: u8 = 0;

#[activity]
async fn add(x: i64, y: i64) -> Result<i64, String> {
    Ok(x + y)
}

#[orchestration]
async fn user_items(ctx: Ctx, x: i64) -> Result<i64, Failure> {
    let a = ctx.call(add, (x, 1)).await?;
    let b = ctx.call(add, (a, 2)).await?;
    Ok(b)
}

pub(crate) fn main() {
    assert_eq!(<user_items as Orchestration>::NAME, "user_items");
}
