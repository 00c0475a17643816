use durable::{Failure, orchestration};

#[orchestration]
async fn greet(name: String) -> Result<String, Failure> {
    Ok(format!("hello, {name}"))
}

fn main() {
    let _ = <greet as durable::Orchestration>::NAME;
}
