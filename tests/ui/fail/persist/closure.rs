use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn work(n: u64) -> Result<u64, String> {
    Ok(n)
}

#[orchestration]
async fn scaled(ctx: Ctx, factor: u64) -> Result<u64, Failure> {
    let scale = move |x: u64| x * factor;
    let n = ctx.call(work, 7).await?;
    Ok(scale(n))
}

fn main() {}
