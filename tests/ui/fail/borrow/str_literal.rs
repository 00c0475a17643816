use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn greet(name: String) -> Result<String, String> {
    Ok(name)
}

#[orchestration]
async fn hello(ctx: Ctx, name: String) -> Result<String, Failure> {
    let greeting = "hello";
    let name = ctx.call(greet, name).await?;
    Ok(format!("{greeting}, {name}"))
}

fn main() {}
