//! A broken activity still defines its unit struct and `Activity` impl, so the orchestration that
//! calls it reports nothing of its own.
use durable::{Ctx, Failure, activity, orchestration};

#[activity(retries = "3")]
async fn charge(amount: u64) -> Result<u64, String> {
    Ok(amount)
}

#[orchestration]
async fn checkout(ctx: Ctx, amount: u64) -> Result<u64, Failure> {
    let charged = ctx.call(charge, amount).await?;
    Ok(charged)
}

fn main() {}
