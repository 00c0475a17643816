use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn greet(name: String) -> Result<String, String> {
    Ok(name)
}

#[orchestration]
async fn hello(ctx: Ctx, names: Option<String>) -> Result<String, Failure> {
    let Some(ref name) = names else {
        return Ok(String::new());
    };
    let greeting = ctx.call(greet, name.clone()).await?;
    Ok(format!("{greeting}, {name}"))
}

fn main() {}
