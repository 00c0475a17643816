use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn price(item: String) -> Result<u64, String> {
    Ok(item.len() as u64)
}

#[orchestration]
async fn total(ctx: Ctx, item: Option<String>) -> Result<u64, Failure> {
    let total = 5 + match item {
        Some(i) => ctx.call(price, i).await?,
        None => 0,
    };
    Ok(total)
}

fn main() {}
