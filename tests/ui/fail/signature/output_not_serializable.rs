use durable::{Ctx, Failure, orchestration};

struct Receipt {
    id: u64,
}

#[orchestration]
async fn ship(ctx: Ctx, id: u64) -> Result<Receipt, Failure> {
    Ok(Receipt { id })
}

fn main() {}
