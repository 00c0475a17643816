use durable::activity;

struct Gateway;

impl Gateway {
    #[activity]
    async fn charge(&self, amount: u64) -> Result<u64, String> {
        Ok(amount)
    }
}

fn main() {}
