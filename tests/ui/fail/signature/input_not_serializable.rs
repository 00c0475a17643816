use durable::{Ctx, Failure, orchestration};

struct Order {
    id: u64,
}

#[orchestration]
async fn ship(ctx: Ctx, order: Order) -> Result<u64, Failure> {
    Ok(order.id)
}

fn main() {}
