use durable::{Ctx, Failure, orchestration};

#[orchestration(name = "greet", name = "greet-v2")]
async fn greet(ctx: Ctx, name: String) -> Result<String, Failure> {
    Ok(format!("hello, {name}"))
}

fn main() {}
