//! Fan-out/fan-in with retries: resize N images in parallel (each resize fails on its first
//! attempt, to show retries), then sum their sizes. Finished branches are stored as they finish,
//! so after a kill only the unfinished ones run again.
//!
//! ```text
//! cargo run --example fanout -- --db /tmp/fanout.db --items 20 --delay-ms 500
//! ```

mod common;

use std::time::Duration;

use durable::{ActivityContext, Ctx, Failure, RetryPolicy, activity, orchestration};

use common::{Options, or_exit, print_step, report, side_effect};

/// "Resizes" image `n`; fails its first attempt.
#[activity]
async fn resize(ctx: ActivityContext, n: u32) -> Result<u64, String> {
    side_effect(&ctx).await;
    if ctx.attempt() == 1 {
        return Err(format!("image {n}: transient failure"));
    }
    Ok(u64::from(n) * 1_000)
}

/// Records the total.
#[activity]
async fn publish(ctx: ActivityContext, total: u64) -> Result<(), String> {
    side_effect(&ctx).await;
    println!("published total {total}");
    Ok(())
}

#[orchestration]
async fn fanout(ctx: Ctx, items: u32) -> Result<u64, Failure> {
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        ..RetryPolicy::attempts(3)
    };
    let calls: Vec<_> =
        (1..=items).map(|n| ctx.call(resize, n).with_retry(policy.clone())).collect();
    let mut total = 0;
    for result in ctx.join(calls).await {
        total += result?;
    }
    ctx.call(publish, total).await?;
    Ok(total)
}

#[tokio::main]
async fn main() {
    let options = Options::parse("fanout");
    let items = options.get("items").and_then(|v| v.parse().ok()).unwrap_or(10);
    // A bar over the branches recorded, on stderr when it is a terminal (the step lines on
    // stdout stay as they are, for the crash tests).
    let bar = indicatif::ProgressBar::new(u64::from(items));
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("[{bar:40}] {pos}/{len} branches recorded")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let counted = bar.clone();
    let on_step = move |e: &durable::StepEvent| {
        print_step(e);
        if matches!(e.outcome, durable::StepOutcome::BranchRecorded(_)) {
            counted.inc(1);
        }
    };
    let runtimes = options.open(|b| b.orchestration(fanout).on_step(on_step.clone())).await;
    let rt = &runtimes[0];
    let handle = or_exit(rt.start(fanout, "fanout-1", items).await);
    report(handle).await;
    bar.finish_and_clear();
}
