use durable::{Ctx, durable_fn};

#[durable_fn]
async fn helper(ctx: Ctx, x: u64) -> u64 {
    x
}

fn main() {}
