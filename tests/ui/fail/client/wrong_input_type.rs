use durable::{Ctx, Failure, Runtime, orchestration};

#[orchestration]
async fn greet(ctx: Ctx, name: String) -> Result<String, Failure> {
    Ok(format!("hello {name}"))
}

// Starting an instance with an input of the wrong type is caught at compile time.
async fn start(rt: Runtime) {
    let _ = rt.start(greet, "g-1", 42u32).await;
}

fn main() {
    let _ = start;
}
