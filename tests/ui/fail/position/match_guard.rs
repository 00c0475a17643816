use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn in_stock(item: String) -> Result<bool, String> {
    Ok(!item.is_empty())
}

#[orchestration]
async fn reserve(ctx: Ctx, item: Option<String>) -> Result<String, Failure> {
    let outcome = match item {
        Some(i) if ctx.call(in_stock, i.clone()).await? => "reserved",
        Some(_) => "out of stock",
        None => "nothing to reserve",
    };
    Ok(outcome.to_string())
}

fn main() {}
