use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn send_email(to: String) -> Result<(), String> {
    let _ = to;
    Ok(())
}

#[orchestration]
async fn notify(ctx: Ctx, to: String) -> Result<(), Failure> {
    send_email::run(to).await?;
    Ok(())
}

fn main() {}
