use durable::{Ctx, Failure, orchestration};

async fn fetch_rate(currency: String) -> f64 {
    let _ = currency;
    1.0
}

#[orchestration]
async fn convert(ctx: Ctx, amount: f64) -> Result<f64, Failure> {
    let rate = fetch_rate("EUR".to_string()).await;
    Ok(amount * rate)
}

fn main() {}
