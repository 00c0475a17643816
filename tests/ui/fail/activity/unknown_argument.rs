use durable::activity;

#[activity(retries = "3")]
async fn charge(amount: u64) -> Result<u64, String> {
    Ok(amount)
}

fn main() {}
