use durable::{Ctx, Failure, activity, orchestration};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Pinned {
    n: u64,
    #[serde(skip)]
    thread_bound: std::marker::PhantomData<*const ()>,
}

#[activity]
async fn work(n: u64) -> Result<u64, String> {
    Ok(n)
}

#[orchestration]
async fn pinned(ctx: Ctx, n: u64) -> Result<u64, Failure> {
    let p = Pinned { n, thread_bound: std::marker::PhantomData };
    ctx.call(work, n).await?;
    Ok(p.n)
}

fn main() {}
