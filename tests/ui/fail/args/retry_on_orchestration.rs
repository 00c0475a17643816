use durable::{Ctx, Failure, orchestration};

#[orchestration(retry = durable::RetryPolicy::attempts(3))]
async fn greet(ctx: Ctx, name: String) -> Result<String, Failure> {
    Ok(format!("hello, {name}"))
}

fn main() {}
