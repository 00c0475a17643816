use durable::{Ctx, Failure, orchestration};

#[orchestration]
fn greet(ctx: Ctx, name: String) -> Result<String, Failure> {
    Ok(format!("hello, {name}"))
}

fn main() {}
