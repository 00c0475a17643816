use durable::{ActivityContext, Ctx, Failure, activity, durable_fn, orchestration};

#[activity]
async fn double(_ctx: ActivityContext, x: u64) -> Result<u64, String> {
    Ok(x * 2)
}

#[durable_fn]
async fn twice(ctx: &Ctx, x: u64) -> Result<u64, String> {
    let y = ctx.call(double, x).await?;
    Ok(y)
}

#[orchestration]
async fn both(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let (a, b) = ctx.join2(twice(&ctx, x), twice(&ctx, x + 1)).await;
    Ok(a? + b?)
}

fn main() {}
