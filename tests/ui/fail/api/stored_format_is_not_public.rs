//! The stored format and the macros' support are not part of the public API.

fn main() {
    let _ = durable::FORMAT_VERSION;
    let _: Option<durable::Frame> = None;
    let _: Option<durable::Command> = None;
    let _ = durable::codec::encode(&1u8);
    let _: Option<durable::StepResult> = None;
}
