use durable::{Ctx, Failure, orchestration};

struct Workflows;

impl Workflows {
    fn greeting(name: &str) -> String {
        format!("hello {name}")
    }

    #[orchestration]
    async fn greet(ctx: Ctx, name: String) -> Result<String, Failure> {
        let _ = ctx;
        Ok(Self::greeting(&name))
    }
}

fn main() {}
