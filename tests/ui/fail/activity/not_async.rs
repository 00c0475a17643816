use durable::activity;

#[activity]
fn charge(amount: u64) -> Result<u64, String> {
    Ok(amount)
}

fn main() {}
