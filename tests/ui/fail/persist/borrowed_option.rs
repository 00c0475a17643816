use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn count(items: Vec<String>) -> Result<usize, String> {
    Ok(items.len())
}

#[orchestration]
async fn first_and_count(ctx: Ctx, items: Vec<String>) -> Result<String, Failure> {
    let first = items.first();
    let n = ctx.call(count, items.clone()).await?;
    Ok(format!("{first:?} of {n}"))
}

fn main() {}
