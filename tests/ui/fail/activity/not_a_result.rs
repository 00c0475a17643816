use durable::activity;

#[activity]
async fn charge(amount: u64) -> u64 {
    amount
}

fn main() {}
