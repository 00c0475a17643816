use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn price(item: String) -> Result<u64, String> {
    Ok(item.len() as u64)
}

fn shipping() -> u64 {
    5
}

#[orchestration]
async fn total(ctx: Ctx, item: String) -> Result<u64, Failure> {
    let total = shipping() + ctx.call(price, item).await?;
    Ok(total)
}

fn main() {}
