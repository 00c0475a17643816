use std::collections::HashMap;

use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn price(item: String) -> Result<u64, String> {
    Ok(item.len() as u64)
}

#[orchestration]
async fn total(ctx: Ctx, stock: HashMap<String, u64>) -> Result<u64, Failure> {
    let mut sum = 0;
    for name in stock.keys() {
        sum += ctx.call(price, name.clone()).await?;
    }
    Ok(sum)
}

fn main() {}
