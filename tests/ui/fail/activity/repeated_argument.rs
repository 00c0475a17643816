use durable::activity;

#[activity(crate = "durable", crate = "durable")]
async fn charge(amount: u64) -> Result<u64, String> {
    Ok(amount)
}

fn main() {}
