//! The seed's process: issue an invoice, then notify about it — durably.
//!
//! ```text
//! cargo run --example invoice -- --db /tmp/inv.db --delay-ms 2000
//! ```
//! Kill it (`kill -9`, or Ctrl-C) while an activity runs and start it again with the same
//! `--db`: it continues at the step it had reached. Run it once more after `completed:` and it
//! prints the stored result without calling anything.

mod common;

use durable::{ActivityContext, Ctx, Failure, Runtime, activity, orchestration};
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
    let rt = or_exit(
        Runtime::builder(&options.db).orchestration(invoice).on_step(print_step).open().await,
    );
    let data = InvoiceData { customer: "ACME Corp".into(), amount_cents: 12_500 };
    let handle = or_exit(rt.start(invoice, "invoice-1", data).await);
    report(handle).await;
}
