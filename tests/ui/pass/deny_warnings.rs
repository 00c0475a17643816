//! The expansion of both macros compiles without a warning, with every rustc lint group denied.
#![deny(warnings, unused, nonstandard_style, rust_2018_idioms)]

use durable::{ActivityContext, Ctx, Failure, Orchestration, activity, durable_fn, orchestration};
use serde::{Deserialize, Serialize};

/// An order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Order {
    id: u64,
    lines: Vec<u64>,
}

/// Charges an amount once per idempotency key.
#[activity(name = "charge-v1")]
pub(crate) async fn charge(ctx: ActivityContext, amount: u64) -> Result<String, String> {
    Ok(format!("{}:{amount}", ctx.idempotency_key()))
}

/// Charges each line of an order; the tuple input and the `if`/`for`/`match` exercise the lowering.
#[orchestration(name = "checkout-v1")]
pub(crate) async fn checkout(ctx: Ctx, order: Order, retry: bool) -> Result<Vec<String>, Failure> {
    let mut receipts = Vec::new();
    for line in order.lines.clone() {
        let receipt = ctx.call(charge, line).await?;
        receipts.push(receipt);
    }
    let total: u64 = order.lines.iter().sum();
    if retry && total > 100 {
        let again = ctx.call(charge, total).await?;
        receipts.push(again);
    }
    match receipts.len() {
        0 => Err(Failure::new(format!("order {} is empty", order.id))),
        _ => Ok(receipts),
    }
}

/// Charges each amount and returns the receipts: a durable function with a loop.
#[durable_fn]
pub(crate) async fn charge_all(ctx: &Ctx, amounts: Vec<u64>) -> Result<Vec<String>, Failure> {
    let mut receipts = Vec::new();
    for amount in amounts {
        receipts.push(ctx.call(charge, amount).await?);
    }
    Ok(receipts)
}

/// Charges twice through the durable function.
#[orchestration]
pub(crate) async fn charge_twice(ctx: Ctx, amount: u64) -> Result<usize, Failure> {
    let first = charge_all(&ctx, vec![amount]).await?;
    let second = charge_all(&ctx, vec![amount, amount]).await?;
    Ok(first.len() + second.len())
}

pub(crate) fn main() {
    assert_eq!(<charge_twice as Orchestration>::NAME, "charge_twice");
    assert_eq!(<checkout as Orchestration>::NAME, "checkout-v1");
    assert_eq!(<charge as durable::Activity>::NAME, "charge-v1");
}
