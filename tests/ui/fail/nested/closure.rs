use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn double(n: u64) -> Result<u64, String> {
    Ok(n * 2)
}

#[orchestration]
async fn doubled(ctx: Ctx, ns: Vec<u64>) -> Result<Vec<u64>, Failure> {
    let out = ns.iter().map(|n| ctx.call(double, *n).await).collect::<Result<_, _>>()?;
    Ok(out)
}

fn main() {}
