use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn work(n: u64) -> Result<u64, String> {
    Ok(n)
}

#[orchestration]
async fn timed(ctx: Ctx, n: u64) -> Result<u128, Failure> {
    let started = std::time::Instant::now();
    ctx.call(work, n).await?;
    Ok(started.elapsed().as_millis())
}

fn main() {}
