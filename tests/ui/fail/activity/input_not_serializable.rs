use durable::activity;

struct Card {
    number: String,
}

#[activity]
async fn charge(card: Card, amount: u64) -> Result<u64, String> {
    let _ = card.number;
    Ok(amount)
}

fn main() {}
