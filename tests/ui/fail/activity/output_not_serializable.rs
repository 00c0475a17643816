use durable::activity;

struct Receipt {
    amount: u64,
}

#[activity]
async fn charge(amount: u64) -> Result<Receipt, String> {
    Ok(Receipt { amount })
}

fn main() {}
