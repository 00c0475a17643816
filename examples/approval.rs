//! An approval that waits for a human: the request goes out, then the orchestration waits for an
//! `approval` event with a timeout; without an answer it escalates to a manager and waits again.
//!
//! ```text
//! cargo run --example approval -- --db /tmp/approval.db --timeout-ms 3000
//! cargo run --example approval -- --db /tmp/approval.db --approve yes   # in time: approved
//! ```
//! Without `--approve`, the first wait times out, the request is escalated, and the second wait
//! times out too: the output is `rejected (no answer)`. The process can be killed and restarted
//! at any point; a wait that timed out while it was down ends on the next start.
//!
//! With `--admin ADDR`, it starts `--instances N` requests (default 300) that wait an hour for
//! their `approval` event, serves the admin API and web view on `ADDR`, prints the URL and the
//! token file, and runs until interrupted:
//!
//! ```text
//! cargo run --example approval -- --admin 127.0.0.1:0
//! durable --db /tmp/durable-examples/approval.db raise approval-007 approval true
//! ```

mod common;

use std::time::Duration;

use durable::{ActivityContext, Ctx, EventError, Failure, activity, orchestration};
use serde::{Deserialize, Serialize};

use common::{Options, or_exit, print_step, report, side_effect};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    what: String,
    requester: String,
    timeout_ms: u64,
}

/// Asks `approver` to approve.
#[activity]
async fn send_request(ctx: ActivityContext, approver: String, what: String) -> Result<(), String> {
    side_effect(&ctx).await;
    println!("asked {approver} to approve {what}");
    Ok(())
}

/// Tells the requester the outcome.
#[activity]
async fn notify_requester(
    ctx: ActivityContext,
    requester: String,
    outcome: String,
) -> Result<(), String> {
    side_effect(&ctx).await;
    println!("told {requester}: {outcome}");
    Ok(())
}

#[orchestration]
async fn approval(ctx: Ctx, request: Request) -> Result<String, Failure> {
    let timeout = Duration::from_millis(request.timeout_ms);
    let mut outcome = None;
    for approver in ["team lead", "manager"].map(String::from) {
        ctx.set_status(&format!("waiting for {approver}"));
        ctx.call(send_request, (approver.clone(), request.what.clone())).await?;
        match ctx.wait_event::<bool>("approval").timeout(timeout).await {
            Ok(true) => outcome = Some(format!("approved by {approver}")),
            Ok(false) => outcome = Some(format!("rejected by {approver}")),
            Err(EventError::TimedOut(_)) => continue,
            Err(e) => return Err(e.into()),
        }
        break;
    }
    let outcome = outcome.unwrap_or_else(|| "rejected (no answer)".to_string());
    ctx.call(notify_requester, (request.requester.clone(), outcome.clone())).await?;
    Ok(outcome)
}

/// `--admin ADDR`: many requests waiting for a human, and the admin server to answer them.
async fn serve_admin(options: &Options, addr: &str) {
    let addr = or_exit(addr.parse().map_err(|e| format!("--admin {addr}: {e}")));
    let count: usize = options.get("instances").and_then(|v| v.parse().ok()).unwrap_or(300);
    let rt = options.open(|b| b.orchestration(approval)).await.swap_remove(0);
    for n in 1..=count {
        let request = Request {
            what: format!("purchase order {n}"),
            requester: format!("requester-{}", n % 7),
            timeout_ms: 3_600_000,
        };
        or_exit(rt.start(approval, format!("approval-{n:03}"), request).await);
    }
    let admin = or_exit(
        durable::admin::serve(
            rt.clone(),
            durable::admin::AdminOptions::new(&options.db).addr(addr),
        )
        .await,
    );
    let token_file = admin.token_file().map(|p| p.display().to_string()).unwrap_or_default();
    println!("{count} approval requests started");
    println!("admin: {}", admin.url());
    println!("token file: {token_file}");
    println!("open: {}/orchestrations/approval?token=$(cat {token_file})", admin.url());
    println!("approve one: durable --db {} raise approval-001 approval true", options.db.display());
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for Ctrl-C: {e}");
    }
    admin.stop().await;
    rt.shutdown().await;
}

#[tokio::main]
async fn main() {
    let options = Options::parse("approval");
    if let Some(addr) = options.get("admin") {
        serve_admin(&options, addr).await;
        return;
    }
    let timeout_ms = options.get("timeout-ms").and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let runtimes = options.open(|b| b.orchestration(approval).on_step(print_step)).await;
    let rt = &runtimes[0];
    let request = Request { what: "a new laptop".into(), requester: "ada".into(), timeout_ms };
    let handle = or_exit(rt.start(approval, "approval-1", request).await);
    if let Some(answer) = options.get("approve") {
        let yes = matches!(answer, "yes" | "true" | "y");
        match rt.raise_event("approval-1", "approval", &yes).await {
            Ok(()) => println!("raised approval={yes}"),
            Err(e) => println!("could not raise the event: {e}"),
        }
    }
    report(handle).await;
}
