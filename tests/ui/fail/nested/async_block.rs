use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn double(n: u64) -> Result<u64, String> {
    Ok(n * 2)
}

#[orchestration]
async fn doubled(ctx: Ctx, n: u64) -> Result<u64, Failure> {
    let later = async { ctx.call(double, n).await };
    Ok(later.await?)
}

fn main() {}
