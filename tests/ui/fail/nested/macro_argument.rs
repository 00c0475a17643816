use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn double(n: u64) -> Result<u64, String> {
    Ok(n * 2)
}

#[orchestration]
async fn doubled(ctx: Ctx, n: u64) -> Result<String, Failure> {
    Ok(format!("{} doubled", ctx.call(double, n).await?))
}

fn main() {}
