use durable::{Ctx, Failure, orchestration};

#[orchestration]
async fn greet(ctx: Ctx, name: &str) -> Result<String, Failure> {
    Ok(format!("hello, {name}"))
}

fn main() {}
