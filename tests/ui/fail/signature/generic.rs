use durable::{Ctx, Failure, orchestration};

#[orchestration]
async fn echo<T: Clone>(ctx: Ctx, value: T) -> Result<T, Failure> {
    Ok(value)
}

fn main() {}
