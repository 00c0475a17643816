use durable::{Ctx, activity};

#[activity]
async fn charge(ctx: Ctx, amount: u64) -> Result<u64, String> {
    Ok(amount)
}

fn main() {}
