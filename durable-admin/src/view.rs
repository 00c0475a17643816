//! The JSON the admin API serves, built straight from a [`Runtime`]: the server answers with
//! it, and the `durable` CLI builds the same JSON when it opens a database directory itself.

use std::time::{SystemTime, UNIX_EPOCH};

use durable_runtime::{
    ClientError, InstanceState, InstanceStatus, ListFilter, RenderError, RenderedFrame, Runtime,
    StepGraph,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// A request the API refuses, with the HTTP status it answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status code (4xx for the caller's mistakes, 5xx for the server's).
    pub status: u16,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 404: no such instance or orchestration.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let status = match &e {
            ClientError::NotFound(_) => 404,
            ClientError::Finished { .. }
            | ClientError::Cancelling { .. }
            | ClientError::Running(_)
            | ClientError::ChildrenRunning { .. }
            | ClientError::ParentWaiting { .. } => 409,
            ClientError::Payload { .. } => 400,
            ClientError::TooLarge { .. } => 413,
            ClientError::Shutdown(_) => 503,
            _ => 500,
        };
        Self::new(status, e.to_string())
    }
}

impl From<durable_runtime::store::StoreError> for ApiError {
    fn from(e: durable_runtime::store::StoreError) -> Self {
        Self::new(500, e.to_string())
    }
}

/// The filters of `GET /api/instances` (its query string).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    /// Only instances in this state (`running`, `completed`, `failed`, `cancelled`,
    /// `suspended`, `incompatible`, `unregistered`).
    pub state: Option<String>,
    /// Only instances of this orchestration.
    pub orchestration: Option<String>,
    /// Only instances parked at the suspension point with this identity.
    pub point: Option<String>,
    /// Only instances whose id contains this text.
    pub q: Option<String>,
    /// Start after this id (the `next` of the previous page).
    pub after: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// The largest page `GET /api/instances` returns.
pub const MAX_PAGE: usize = 1000;

fn state_of_name(name: &str) -> Result<InstanceState, ApiError> {
    Ok(match name {
        "scheduled" => InstanceState::Scheduled { at: std::time::UNIX_EPOCH },
        "running" => InstanceState::Running,
        "completed" => InstanceState::Completed,
        "failed" => InstanceState::Failed { message: String::new() },
        "cancelled" => InstanceState::Cancelled { reason: String::new() },
        "suspended" => InstanceState::Suspended,
        "incompatible" => InstanceState::Incompatible { message: String::new() },
        "unregistered" => InstanceState::Unregistered,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown state `{other}`; expected one of: scheduled, running, completed, failed, \
                 cancelled, suspended, incompatible, unregistered"
            )));
        }
    })
}

/// Milliseconds since the Unix epoch.
fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` (milliseconds since the Unix epoch) as RFC 3339 UTC text, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The message of a failed, cancelled or refused instance.
fn error_of(state: &InstanceState) -> Option<&str> {
    match state {
        InstanceState::Failed { message } | InstanceState::Incompatible { message } => {
            Some(message)
        }
        InstanceState::Cancelled { reason } => Some(reason),
        _ => None,
    }
}

/// One instance, as listed: everything [`InstanceStatus`] says.
pub fn summary(s: &InstanceStatus) -> Value {
    json!({
        "id": s.id,
        "orchestration": s.orchestration,
        "version": s.version,
        "state": s.state.name(),
        "error": error_of(&s.state),
        "steps": s.steps,
        "point": s.point.as_ref().map(|(identity, line)| json!({"identity": identity, "line": line})),
        "pending": s.pending,
        "stored_locals": s.stored_locals.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
        "frame_bytes": s.frame_bytes,
        "created": rfc3339(ms(s.created)),
        "updated": rfc3339(ms(s.updated)),
        "parent": s.parent,
        "buffered_events": s.buffered_events,
    })
}

/// `GET /api/instances`: `{"instances": [..], "next": id or null}`.
pub fn list(rt: &Runtime, query: &ListQuery) -> Result<Value, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let states = query.state.as_deref().map(state_of_name).transpose()?.map(|s| vec![s]);
    let mut filter = ListFilter {
        states,
        orchestration: query.orchestration.clone(),
        after: query.after.clone(),
        limit: Some(limit),
    };
    let mut out = Vec::new();
    loop {
        let page = rt.list(&filter)?;
        for status in page.instances {
            let point_ok = query
                .point
                .as_ref()
                .is_none_or(|p| status.point.as_ref().is_some_and(|(id, _)| id == p));
            let id_ok = query.q.as_ref().is_none_or(|q| status.id.contains(q.as_str()));
            if point_ok && id_ok {
                out.push(summary(&status));
                if out.len() == limit {
                    let next = status.id.clone();
                    return Ok(json!({"instances": out, "next": next}));
                }
            }
        }
        match page.next {
            Some(next) => filter.after = Some(next),
            None => return Ok(json!({"instances": out, "next": null})),
        }
    }
}

fn rendered(frame: &RenderedFrame) -> Value {
    json!({
        "point": frame.point,
        "locals": frame.locals.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
        "nested": frame.nested.as_ref().map(|(name, f)| json!({"function": name, "frame": rendered(f)})),
    })
}

/// `GET /api/instances/{id}`: the summary plus decoded locals (`locals`, or `locals_error`
/// saying why they could not be decoded), custom status, output, and children.
pub fn describe(rt: &Runtime, id: &str) -> Result<Value, ApiError> {
    let status =
        rt.status(id)?.ok_or_else(|| ApiError::not_found(format!("no instance `{id}`")))?;
    let mut out = summary(&status);
    let (locals, locals_error) = match rt.locals(id) {
        Ok(frame) => (frame.as_ref().map(rendered), None),
        Err(RenderError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("no instance `{id}`")));
        }
        Err(e) => (None, Some(e.to_string())),
    };
    out["locals"] = locals.unwrap_or(Value::Null);
    out["locals_error"] = json!(locals_error);
    out["custom_status"] = opaque(status.custom_status::<String>());
    out["output"] = opaque(status.output::<String>());
    out["children"] = json!(rt.children(id)?);
    Ok(out)
}

/// A stored value of a type only the orchestration knows: shown when it is text.
fn opaque<E>(value: Option<Result<String, E>>) -> Value {
    match value {
        None => Value::Null,
        Some(Ok(text)) => json!(text),
        Some(Err(_)) => json!("(a value that is not text)"),
    }
}

/// Runs `read` on a blocking thread. A list with filters, an instance's children and the
/// graph's parked counts read every instance record; on the handler's thread that would hold
/// up the runtime's own tasks scheduled on it (drivers, timers) for as long.
pub(crate) async fn off_thread<T: Send + 'static>(
    rt: &Runtime,
    read: impl FnOnce(&Runtime) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let rt = rt.clone();
    tokio::task::spawn_blocking(move || read(&rt))
        .await
        .map_err(|e| ApiError::new(500, format!("the read stopped: {e}")))?
}

/// The name of instance `id`'s state as seen now, or `null` when it cannot be read: what a
/// steering answer reports, since the request itself only records what is to happen.
fn state_now(rt: &Runtime, id: &str) -> Value {
    rt.status(id).ok().flatten().map_or(Value::Null, |s| json!(s.state.name()))
}

/// `POST /api/instances/{id}/cancel`: records the cancellation (of `id` and the
/// sub-orchestrations it waits for) and answers `{"cancelled": id, "reason": …, "state": …}`,
/// `state` as seen right after. The cancel is only recorded: a process that runs the
/// orchestration applies it at the instance's next suspension point, so `state` is usually not
/// `cancelled` yet, and a step already running may still complete the instance.
pub async fn cancel(rt: &Runtime, id: &str, reason: &str) -> Result<Value, ApiError> {
    rt.cancel(id, reason).await?;
    Ok(json!({"cancelled": id, "reason": reason, "state": state_now(rt, id)}))
}

/// `POST /api/instances/{id}/suspend`: `{"suspended": id, "was": …, "state": …}`, the states
/// seen right before and right after (`was` is `suspended` when it already was).
pub async fn suspend(rt: &Runtime, id: &str) -> Result<Value, ApiError> {
    let was = state_now(rt, id);
    rt.suspend(id).await?;
    Ok(json!({"suspended": id, "was": was, "state": state_now(rt, id)}))
}

/// `POST /api/instances/{id}/resume`: `{"resumed": id, "was": …, "state": …}`, the states seen
/// right before and right after; resuming an instance that is not suspended changes nothing,
/// and `was` shows it.
pub async fn resume(rt: &Runtime, id: &str) -> Result<Value, ApiError> {
    let was = state_now(rt, id);
    rt.resume(id).await?;
    Ok(json!({"resumed": id, "was": was, "state": state_now(rt, id)}))
}

/// `GET /api/orchestrations`: name and version of each registered orchestration.
pub fn orchestrations(rt: &Runtime) -> Value {
    json!(
        rt.orchestrations()
            .into_iter()
            .map(|(name, version)| json!({"name": name, "version": version}))
            .collect::<Vec<_>>()
    )
}

/// The step graph of `name` (the newest version, or `version`), if registered.
pub fn step_graph(rt: &Runtime, name: &str, version: Option<u32>) -> Result<StepGraph, ApiError> {
    match version {
        Some(v) => rt.graph_version(name, v),
        None => rt.graph(name),
    }
    .ok_or_else(|| {
        ApiError::not_found(format!(
            "orchestration `{name}`{} is not registered in this process",
            version.map(|v| format!(" version {v}")).unwrap_or_default()
        ))
    })
}

/// `GET /api/orchestrations/{name}`: the step graph with `parked`, the number of unfinished
/// instances of that version at each point, on each point.
pub fn graph(rt: &Runtime, name: &str, version: Option<u32>) -> Result<Value, ApiError> {
    let graph = step_graph(rt, name, version)?;
    let counts = rt.point_counts(name)?;
    let mut out = serde_json::to_value(&graph).map_err(|e| ApiError::new(500, e.to_string()))?;
    if let Some(points) = out["points"].as_array_mut() {
        for point in points {
            let parked: u64 = counts
                .iter()
                .filter(|c| c.version == graph.version && point["identity"] == c.point.as_str())
                .map(|c| c.instances)
                .sum();
            point["parked"] = json!(parked);
        }
    }
    Ok(out)
}
