// Associated functions that name neither `self` nor `Self`: the macros find them in the file.
use durable::{Ctx, Failure, activity, durable_fn, orchestration};

struct Workflows;

impl Workflows {
    #[orchestration]
    async fn greet(ctx: Ctx, name: String) -> Result<String, Failure> {
        let _ = ctx;
        Ok(name)
    }

    #[activity]
    async fn shout(s: String) -> Result<String, String> {
        Ok(s.to_uppercase())
    }

    #[durable_fn]
    async fn twice(ctx: &Ctx, x: u64) -> u64 {
        let _ = ctx;
        x * 2
    }
}

// Free functions of the same file expand as usual.
mod free {
    use durable::{Ctx, Failure, orchestration};

    #[orchestration]
    pub async fn free_and_fine(ctx: Ctx, x: u64) -> Result<u64, Failure> {
        let _ = ctx;
        Ok(x)
    }
}

fn main() {}
