use durable::activity;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Declined {
    Insufficient,
    Fraud,
}

#[activity]
async fn charge(amount: u64) -> Result<u64, Declined> {
    if amount > 100 { Err(Declined::Insufficient) } else { Ok(amount) }
}

fn main() {}
