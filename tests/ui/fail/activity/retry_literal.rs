use durable::activity;

#[activity(retry = 3)]
async fn charge(amount: u64) -> Result<u64, String> {
    Ok(amount)
}

fn main() {}
