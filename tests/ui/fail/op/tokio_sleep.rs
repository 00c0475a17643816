use std::time::Duration;

use durable::{Ctx, Failure, orchestration};

#[orchestration]
async fn wait_a_bit(ctx: Ctx, secs: u64) -> Result<(), Failure> {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(())
}

fn main() {}
