use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn allowed(user: String) -> Result<bool, String> {
    Ok(!user.is_empty())
}

#[orchestration]
async fn check(ctx: Ctx, user: String) -> Result<bool, Failure> {
    let ok = user.len() > 3 && ctx.call(allowed, user.clone()).await?;
    Ok(ok)
}

fn main() {}
