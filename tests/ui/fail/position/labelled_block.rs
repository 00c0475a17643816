use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn price(item: String) -> Result<u64, String> {
    Ok(item.len() as u64)
}

#[orchestration]
async fn total(ctx: Ctx, item: String) -> Result<u64, Failure> {
    let total = 'priced: {
        if item.is_empty() {
            break 'priced 0;
        }
        ctx.call(price, item).await?
    };
    Ok(total)
}

fn main() {}
