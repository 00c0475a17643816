use durable::orchestration;

#[orchestration]
struct Invoice {
    id: u64,
}

fn main() {}
