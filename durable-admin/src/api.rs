//! The JSON endpoints under `/api` and `/metrics`.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/instances?state=&orchestration=&point=&q=&after=&limit=` | a page of instances |
//! | `GET /api/instances/{id}` | one instance, locals decoded |
//! | `POST /api/instances/{id}/events/{name}` (body: any JSON) | raise an event |
//! | `POST /api/instances/{id}/cancel` (body: `{"reason": ".."}`, optional) | request a cancel ([`view::cancel`]) |
//! | `POST /api/instances/{id}/suspend`, `…/resume` | suspend, resume ([`view::suspend`], [`view::resume`]) |
//! | `DELETE /api/instances/{id}` | purge a finished instance |
//! | `GET /api/orchestrations` | registered orchestrations |
//! | `GET /api/orchestrations/{name}?version=` | step graph, `parked` on each point |
//! | `GET /metrics` | Prometheus text |
//!
//! Errors are `{"error": "…"}` with a 4xx or 5xx status, axum's own refusals included (a body
//! over [`MAX_BODY`] is 413, a path that is not UTF-8 400, a wrong method 405).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use durable_runtime::Runtime;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::view::{self, ApiError, ListQuery};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(json!({"error": self.message}))).into_response()
    }
}

type Answer = Result<axum::Json<Value>, ApiError>;

/// The largest request body the API reads, in bytes: the largest event payload a runtime can
/// accept (`RuntimeBuilder::max_payload` is at most the record limit, 64 MiB, what the decoder
/// reads back), and room for the JSON whitespace the stored form drops. A runtime configured
/// with a lower limit refuses a larger payload itself (400, saying the limit). axum's default,
/// 2 MB, refused payloads the runtime takes.
pub(crate) const MAX_BODY: usize = (64 << 20) + (64 << 10);

pub(crate) fn routes() -> Router<Runtime> {
    Router::new()
        .route("/api/instances", get(list))
        .route("/api/instances/{id}", get(describe).delete(purge))
        .route("/api/instances/{id}/events/{name}", post(raise))
        .route("/api/instances/{id}/cancel", post(cancel))
        .route("/api/instances/{id}/suspend", post(suspend))
        .route("/api/instances/{id}/resume", post(resume))
        .route("/api/orchestrations", get(orchestrations))
        .route("/api/orchestrations/{name}", get(graph))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(json_errors))
        .route("/metrics", get(metrics))
}

/// Gives every error answer of the API a JSON body, `{"error": "…"}`, as the API promises:
/// axum's own refusals (a body over the limit, a path that is not UTF-8, a wrong method) come
/// as plain text or with no body at all, which clients expecting JSON cannot read.
async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is over the limit of {MAX_BODY} bytes")
        }
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "{method} is not allowed on this path; allowed: {}",
            allow.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("none")
        ),
        _ => {
            // A rejection's text is short; a larger body is not one this layer should copy.
            let text = axum::body::to_bytes(response.into_body(), 64 << 10).await;
            match text.map(|b| String::from_utf8_lossy(&b).trim().to_owned()) {
                Ok(text) if !text.is_empty() => text,
                _ => status.canonical_reason().unwrap_or("error").to_owned(),
            }
        }
    };
    let mut out = ApiError::new(status.as_u16(), message).into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// Parses a query string, answering 400 (not axum's plain-text rejection) when it is wrong.
fn query<T: serde::de::DeserializeOwned + Default>(raw: Option<&str>) -> Result<T, ApiError> {
    match raw {
        None | Some("") => Ok(T::default()),
        Some(raw) => Query::<T>::try_from_uri(
            &format!("/?{raw}").parse().map_err(|_| ApiError::bad_request("bad query string"))?,
        )
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text()))),
    }
}

async fn list(State(rt): State<Runtime>, uri: axum::http::Uri) -> Answer {
    let q: ListQuery = query(uri.query())?;
    Ok(axum::Json(view::off_thread(&rt, move |rt| view::list(rt, &q)).await?))
}

async fn describe(State(rt): State<Runtime>, Path(id): Path<String>) -> Answer {
    Ok(axum::Json(view::off_thread(&rt, move |rt| view::describe(rt, &id)).await?))
}

/// A JSON body, or 400 saying why it is not one.
fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))
}

async fn raise(
    State(rt): State<Runtime>,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let payload = body_json(&body)?;
    crate::raise_json(&rt, &id, &name, &payload).await?;
    Ok(axum::Json(json!({"raised": name, "id": id})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

async fn cancel(State(rt): State<Runtime>, Path(id): Path<String>, body: Bytes) -> Answer {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<CancelBody>(&body)
            .map_err(|e| ApiError::bad_request(format!("body must be {{\"reason\": \"…\"}}: {e}")))?
            .reason
    };
    let reason = reason.unwrap_or_else(|| "cancelled by an administrator".to_owned());
    Ok(axum::Json(view::cancel(&rt, &id, &reason).await?))
}

async fn suspend(State(rt): State<Runtime>, Path(id): Path<String>) -> Answer {
    Ok(axum::Json(view::suspend(&rt, &id).await?))
}

async fn resume(State(rt): State<Runtime>, Path(id): Path<String>) -> Answer {
    Ok(axum::Json(view::resume(&rt, &id).await?))
}

async fn purge(State(rt): State<Runtime>, Path(id): Path<String>) -> Answer {
    rt.purge(&id).await?;
    Ok(axum::Json(json!({"purged": id})))
}

async fn orchestrations(State(rt): State<Runtime>) -> Answer {
    Ok(axum::Json(view::orchestrations(&rt)))
}

#[derive(Deserialize, Default)]
struct VersionQuery {
    version: Option<u32>,
}

async fn graph(
    State(rt): State<Runtime>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> Answer {
    let q: VersionQuery = query(uri.query())?;
    Ok(axum::Json(view::off_thread(&rt, move |rt| view::graph(rt, &name, q.version)).await?))
}

async fn metrics(State(rt): State<Runtime>) -> Response {
    let text = tokio::task::spawn_blocking(move || crate::prometheus::render(&rt)).await;
    match text {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
            .into_response(),
        Err(e) => ApiError::new(500, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_limit_covers_the_largest_payload_a_runtime_accepts() {
        let largest = durable_runtime::__support_v1::codec::DECODE_LIMIT;
        assert!(MAX_BODY > largest && MAX_BODY - largest <= 1 << 20, "{MAX_BODY} for {largest}");
    }
}
