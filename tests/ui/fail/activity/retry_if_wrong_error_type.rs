use durable::activity;

/// Takes the activity's error itself, not the `ActivityError` around it.
fn is_transient(e: &String) -> bool {
    e == "busy"
}

#[activity(retry_if = is_transient)]
async fn charge(amount: u64) -> Result<u64, String> {
    Ok(amount)
}

fn main() {}
