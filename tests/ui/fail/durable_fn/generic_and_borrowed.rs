use durable::{Ctx, durable_fn};

#[durable_fn]
async fn helper<T: Clone>(ctx: &Ctx, x: &str, t: T) -> usize {
    x.len()
}

fn main() {}
