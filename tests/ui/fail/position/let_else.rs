use durable::{Ctx, Failure, activity, orchestration};

#[activity]
async fn default_item(_unit: ()) -> Result<String, String> {
    Ok("default".into())
}

#[orchestration]
async fn pick(ctx: Ctx, item: Option<String>) -> Result<String, Failure> {
    let Some(item) = item else {
        let d = ctx.call(default_item, ()).await?;
        return Ok(d);
    };
    Ok(item)
}

fn main() {}
