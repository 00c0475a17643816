use durable::{Ctx, orchestration};

#[orchestration]
async fn fire_and_forget(ctx: Ctx, id: u64) {
    let _ = id;
}

fn main() {}
