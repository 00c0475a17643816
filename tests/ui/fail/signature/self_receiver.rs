use durable::{Ctx, Failure, orchestration};

struct Greeter;

impl Greeter {
    #[orchestration]
    async fn greet(&self, _ctx: Ctx, name: String) -> Result<String, Failure> {
        Ok(format!("hello, {name}"))
    }
}

fn main() {}
