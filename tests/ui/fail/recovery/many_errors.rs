//! Every problem is reported at once, and the unit struct and trait impl are still emitted, so
//! `main` below, which names the orchestration, does not add errors of its own.
use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn work(n: u64) -> Result<u64, String> {
    Ok(n)
}

#[orchestration(name = "", colour = "blue")]
async fn busy(ctx: Ctx, n: u64) -> Result<u64, Failure> {
    let label = "n";
    let a = ctx.call(work, n).await?;
    let b = n > 1 && ctx.call(work, a).await? > 2;
    let c = format!("{}", ctx.call(work, a).await?);
    let d = (|| async { ctx.call(work, 1).await })();
    let _ = (b, c, d, label);
    Ok(a)
}

fn main() {
    let _ = <busy as durable::Orchestration>::NAME;
    let _: <busy as durable::Orchestration>::Input = 3_u64;
}
