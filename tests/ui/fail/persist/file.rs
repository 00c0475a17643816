use std::io::Write;

use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn work(n: u64) -> Result<u64, String> {
    Ok(n)
}

#[orchestration]
async fn logged(ctx: Ctx, n: u64) -> Result<(), Failure> {
    let mut log = std::fs::File::create("log.txt").map_err(|e| e.to_string())?;
    let m = ctx.call(work, n).await?;
    writeln!(log, "{m}").map_err(|e| e.to_string())?;
    Ok(())
}

fn main() {}
