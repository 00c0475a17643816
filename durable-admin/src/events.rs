//! Raising an event whose payload arrives as JSON: stored as JSON and decoded with the waiting
//! orchestration's own type when it is delivered (`Runtime::raise_event_json`), so any JSON
//! value works: `true` for a `bool` wait, `{"by": "lead", "ok": true}` for a struct. A value
//! that does not fit the waiter's type reaches the orchestration as `EventError::BadPayload`.

use durable_runtime::Runtime;
use serde_json::Value;

use crate::ApiError;

/// Raises event `name` for instance `id` with a JSON payload.
pub async fn raise_json(
    rt: &Runtime,
    id: &str,
    name: &str,
    payload: &Value,
) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("the event name must not be empty"));
    }
    rt.raise_event_json(id, name, payload).await.map_err(ApiError::from)
}
