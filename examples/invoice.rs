//! The seed's process: issue an invoice, then notify about it — durably.
//!
//! ```text
//! cargo run --example invoice -- --db /tmp/inv.db --delay-ms 2000
//! ```
//! Kill it (`kill -9`, or Ctrl-C) while an activity runs and start it again with the same
//! `--db`: it continues at the step it had reached. Run it once more after `completed:` and it
//! prints the stored result without calling anything.
//!
//! `--instances N` runs `invoice-1` … `invoice-N` side by side. On PostgreSQL, any number of
//! processes at once (`--postgres URL`, `--workers N` runtimes
//! each, `--no-worker` for a client that only starts and waits): each starts the same instance
//! (the first start creates it, the others find it), the workers share the steps, and every
//! process ends with `completed:`. A killed worker's steps are taken over by the others once
//! its lease runs out (`--lease-ms N`, default 15,000).

mod common;

use durable::{ActivityContext, Ctx, Failure, activity, orchestration};
use serde::{Deserialize, Serialize};

use common::{Options, or_exit, print_step, report, side_effect};

/// What an invoice is issued for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InvoiceData {
    customer: String,
    amount_cents: u64,
}

/// The number the invoice service gives an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InvoiceId(String);

impl std::fmt::Display for InvoiceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Issues the invoice. The number derives from the idempotency key, so a second attempt after a
/// crash issues the same invoice.
#[activity]
async fn issue_invoice(ctx: ActivityContext, data: InvoiceData) -> Result<InvoiceId, String> {
    side_effect(&ctx).await;
    if data.amount_cents == 0 {
        return Err(format!("refusing an empty invoice for {}", data.customer));
    }
    Ok(InvoiceId(format!("INV-{}", ctx.idempotency_key().replace(':', "-"))))
}

/// Tells the customer about the invoice.
#[activity]
async fn notify_about_invoice(ctx: ActivityContext, id: InvoiceId) -> Result<(), String> {
    side_effect(&ctx).await;
    let _ = id;
    Ok(())
}

/// The process: two durable steps.
#[orchestration]
async fn invoice(ctx: Ctx, data: InvoiceData) -> Result<InvoiceId, Failure> {
    let id = ctx.call(issue_invoice, data).await?;
    ctx.call(notify_about_invoice, id.clone()).await?;
    Ok(id)
}

#[tokio::main]
async fn main() {
    let options = Options::parse("invoice");
    let runtimes = options.open(|b| b.orchestration(invoice).on_step(print_step)).await;
    // `--instances N` runs `invoice-1` … `invoice-N` side by side.
    let instances: u64 = options.get("instances").and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut handles = Vec::new();
    for i in 1..=instances {
        let data = InvoiceData { customer: "ACME Corp".into(), amount_cents: 12_500 * i };
        handles.push(or_exit(runtimes[0].start(invoice, format!("invoice-{i}"), data).await));
    }
    for handle in handles {
        report(handle).await;
    }
}
