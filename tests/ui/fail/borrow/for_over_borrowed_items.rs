use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn price(item: String) -> Result<u64, String> {
    Ok(item.len() as u64)
}

fn in_stock(items: &[String]) -> impl Iterator<Item = &String> {
    items.iter().filter(|i| !i.is_empty())
}

#[orchestration]
async fn total(ctx: Ctx, items: Vec<String>) -> Result<u64, Failure> {
    let mut sum = 0;
    for item in in_stock(&items) {
        sum += ctx.call(price, item.clone()).await?;
    }
    Ok(sum)
}

fn main() {}
