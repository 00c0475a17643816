use durable::activity;

#[activity]
async fn currency(code: u32) -> Result<&'static str, String> {
    if code == 978 { Ok("EUR") } else { Err(format!("unknown currency {code}")) }
}

fn main() {}
