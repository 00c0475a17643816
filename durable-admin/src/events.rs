//! Raising an event whose payload arrives as JSON.
//!
//! Stored payloads are in the runtime's positional binary format, which only the waiting
//! orchestration's type can read; JSON carries no such type. A scalar is stored as the natural
//! Rust type of its JSON kind: `true`/`false` as `bool`, a string as `String`, an integer as
//! `i64` (or `u64` above `i64::MAX`), another number as `f64`, `null` as `()`. An orchestration
//! waiting with `ctx.wait_event::<bool>(..)` takes `true`; one waiting for another type gets
//! `EventError::BadPayload`, exactly as if a Rust client had raised the wrong type.

use durable_runtime::Runtime;
use serde_json::Value;

use crate::ApiError;

/// Raises event `name` for instance `id` with a JSON scalar payload, stored as described in
/// this module; arrays and objects are refused with 400, since their stored layout depends on
/// the orchestration's type.
pub async fn raise_json(
    rt: &Runtime,
    id: &str,
    name: &str,
    payload: &Value,
) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("the event name must not be empty"));
    }
    let raised = match payload {
        Value::Bool(b) => rt.raise_event(id, name, b).await,
        Value::String(s) => rt.raise_event(id, name, s).await,
        Value::Null => rt.raise_event(id, name, &()).await,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                rt.raise_event(id, name, &i).await
            } else if let Some(u) = n.as_u64() {
                rt.raise_event(id, name, &u).await
            } else if let Some(f) = n.as_f64() {
                rt.raise_event(id, name, &f).await
            } else {
                return Err(ApiError::bad_request(format!("unsupported number {n}")));
            }
        }
        Value::Array(_) | Value::Object(_) => {
            return Err(ApiError::bad_request(
                "event payloads from JSON must be a scalar (true/false, a string, a number or \
                 null): the stored layout of arrays and objects depends on the Rust type the \
                 orchestration waits for; raise those from Rust with `Runtime::raise_event`",
            ));
        }
    };
    raised.map_err(ApiError::from)
}
