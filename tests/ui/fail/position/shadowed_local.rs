use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn price_of(item: String) -> Result<u64, String> {
    Ok(item.len() as u64)
}

#[activity]
async fn record(line: String) -> Result<(), String> {
    let _ = line;
    Ok(())
}

#[orchestration]
async fn discounts(ctx: Ctx, item: String, codes: Vec<String>) -> Result<u64, Failure> {
    let price = ctx.call(price_of, item).await?;
    for code in codes {
        let price = price * 9 / 10;
        ctx.call(record, format!("{code}: {price}")).await?;
    }
    Ok(price)
}

fn main() {}
