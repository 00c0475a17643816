use durable::{Ctx, Failure, orchestration};

// Type parameters are fine (see tests/control_flow.rs); a lifetime is not: what is stored owns
// its data.
#[orchestration]
async fn echo<'a>(ctx: Ctx, value: String) -> Result<String, Failure> {
    Ok(value)
}

fn main() {}
