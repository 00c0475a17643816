use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn price(item: String) -> Result<u64, String> {
    Ok(item.len() as u64)
}

#[orchestration]
async fn total(ctx: Ctx, a: String, b: String) -> Result<u64, Failure> {
    let (x, y) = tokio::join!(ctx.call(price, a), ctx.call(price, b));
    Ok(x? + y?)
}

fn main() {}
