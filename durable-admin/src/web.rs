//! The web view: server-rendered HTML pages (instances, one instance, orchestrations, one
//! orchestration's step graph), from the same JSON the API serves. The stylesheet and the
//! script (live refresh of the instances table) are embedded in the binary; nothing is
//! loaded from elsewhere.

use std::fmt::Write;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use durable_runtime::Runtime;
use serde_json::Value;

use crate::markup::{escape, path_segment, url_encode};
use crate::view::{self, ApiError, ListQuery};

const CSS: &str = include_str!("../assets/admin.css");
const JS: &str = include_str!("../assets/admin.js");

pub(crate) fn routes() -> Router<Runtime> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/instances") }))
        .route("/instances", get(instances))
        .route("/instances/{id}", get(instance))
        .route("/orchestrations", get(orchestrations))
        .route("/orchestrations/{name}", get(orchestration))
        .route("/orchestrations/{name}/graph.svg", get(graph_svg))
        .route("/assets/admin.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], CSS) }))
        .route(
            "/assets/admin.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], JS) }),
        )
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t} · durable</title><link rel="stylesheet" href="/assets/admin.css"></head><body><header><a href="/instances">Instances</a><a href="/orchestrations">Orchestrations</a><a href="/metrics">Metrics</a></header><main><h1>{t}</h1>{body}</main><script src="/assets/admin.js"></script></body></html>"#,
        t = escape(title)
    ))
}

fn error_page(e: &ApiError) -> Response {
    let status = axum::http::StatusCode::from_u16(e.status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (status, page("Error", &format!(r#"<p class="error">{}</p>"#, escape(&e.message))))
        .into_response()
}

/// A link to `{prefix}{segment}{rest}` showing `label`, or `label` alone (escaped) when
/// `segment` cannot be a URL path segment: a link that a browser would resolve to another page
/// is worse than none.
fn link(prefix: &str, segment: &str, rest: &str, label: &str) -> String {
    match path_segment(segment) {
        Some(segment) => format!(r#"<a href="{prefix}{segment}{rest}">{}</a>"#, escape(label)),
        None => escape(label),
    }
}

/// A link to the page of instance `id`, or the id as text when no URL reaches it (`.`, `..`).
fn instance_link(id: &str) -> String {
    link("/instances/", id, "", id)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn instances(State(rt): State<Runtime>, uri: Uri) -> Response {
    let q: ListQuery = match uri.query() {
        Some(raw) => match serde_urlencoded_query(raw) {
            Ok(q) => q,
            Err(e) => return error_page(&e),
        },
        None => ListQuery::default(),
    };
    let query = q.clone();
    let list = match view::off_thread(&rt, move |rt| view::list(rt, &query)).await {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let mut body = String::new();
    let selected = q.state.clone().unwrap_or_default();
    body.push_str(r#"<form class="filters" method="get" action="/instances"><label>State <select name="state"><option value="">any</option>"#);
    for s in [
        "scheduled",
        "running",
        "suspended",
        "completed",
        "failed",
        "cancelled",
        "incompatible",
        "unregistered",
    ] {
        let sel = if s == selected { " selected" } else { "" };
        let _ = write!(body, r#"<option{sel}>{s}</option>"#);
    }
    let _ = write!(
        body,
        r#"</select></label><label>Id contains <input name="q" value="{}"></label>"#,
        escape(q.q.as_deref().unwrap_or(""))
    );
    for (name, value) in [("orchestration", &q.orchestration), ("point", &q.point)] {
        if let Some(v) = value {
            let _ = write!(body, r#"<input type="hidden" name="{name}" value="{}">"#, escape(v));
        }
    }
    // `live=1` starts with the live refresh on.
    let live = uri.query().is_some_and(|q| q.split('&').any(|p| p == "live=1"));
    let _ = write!(
        body,
        r#"<button type="submit">Filter</button><label><input type="checkbox" id="live"{}> live</label></form>"#,
        if live { " checked" } else { "" }
    );
    if let Some(point) = &q.point {
        let _ = write!(body, "<p>Parked at <code>{}</code></p>", escape(point));
    }
    body.push_str(r#"<table id="instances"><thead><tr><th>Id</th><th>Orchestration</th><th>State</th><th>Line</th><th>Pending</th><th>Steps</th><th>Updated</th></tr></thead><tbody>"#);
    let rows = list["instances"].as_array().cloned().unwrap_or_default();
    for i in &rows {
        let id = text(&i["id"]);
        let orch = text(&i["orchestration"]);
        let state = text(&i["state"]);
        let _ = write!(
            body,
            r#"<tr data-id="{ide}"><td>{id_link}</td><td>{orch_link}</td><td class="state-{state}">{state}</td><td class="num">{line}</td><td>{pending}</td><td class="num">{steps}</td><td>{updated}</td></tr>"#,
            ide = escape(&id),
            id_link = instance_link(&id),
            orch_link = link("/orchestrations/", &orch, "", &orch),
            line = text(&i["point"]["line"]),
            pending = escape(&text(&i["pending"])),
            steps = text(&i["steps"]),
            updated = escape(&text(&i["updated"])),
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(body, r#"<p id="shown">{} shown</p>"#, rows.len());
    if let Some(next) = list["next"].as_str() {
        let mut params = vec![format!("after={}", url_encode(next))];
        for (k, v) in [
            ("state", &q.state),
            ("orchestration", &q.orchestration),
            ("point", &q.point),
            ("q", &q.q),
        ] {
            if let Some(v) = v {
                params.push(format!("{k}={}", url_encode(v)));
            }
        }
        if let Some(limit) = q.limit {
            params.push(format!("limit={limit}"));
        }
        let _ = write!(
            body,
            r#"<p><a id="next" href="/instances?{}">Next page</a></p>"#,
            escape(&params.join("&"))
        );
    }
    page("Instances", &body).into_response()
}

fn serde_urlencoded_query<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    let uri: Uri =
        format!("/?{raw}").parse().map_err(|_| ApiError::bad_request("bad query string"))?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

fn row(body: &mut String, name: &str, value: &str) {
    let _ = write!(body, "<tr><th>{}</th><td>{value}</td></tr>", escape(name));
}

fn locals_table(body: &mut String, frame: &Value) {
    body.push_str(
        r#"<table class="locals"><thead><tr><th>Local</th><th>Value</th></tr></thead><tbody>"#,
    );
    for local in frame["locals"].as_array().into_iter().flatten() {
        let pretty = serde_json::to_string_pretty(&local["value"]).unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td><pre>{}</pre></td></tr>",
            escape(&text(&local["name"])),
            escape(&pretty)
        );
    }
    body.push_str("</tbody></table>");
    if let Some(nested) = frame["nested"].as_object() {
        let _ = write!(
            body,
            "<p>In durable function <code>{}</code>:</p>",
            escape(&text(&nested["function"]))
        );
        locals_table(body, &nested["frame"]);
    }
}

async fn instance(State(rt): State<Runtime>, Path(id): Path<String>) -> Response {
    let key = id.clone();
    let d = match view::off_thread(&rt, move |rt| view::describe(rt, &key)).await {
        Ok(d) => d,
        Err(e) => return error_page(&e),
    };
    let mut body = String::from(r#"<table class="summary"><tbody>"#);
    let orch = text(&d["orchestration"]);
    row(
        &mut body,
        "orchestration",
        &format!("{} v{}", link("/orchestrations/", &orch, "", &orch), text(&d["version"])),
    );
    let state = text(&d["state"]);
    row(&mut body, "state", &format!(r#"<span class="state-{state}" id="state">{state}</span>"#));
    for key in [
        "error",
        "pending",
        "custom_status",
        "output",
        "steps",
        "buffered_events",
        "frame_bytes",
        "created",
        "updated",
    ] {
        if !d[key].is_null() {
            row(&mut body, key, &escape(&text(&d[key])));
        }
    }
    if let Some(point) = d["point"].as_object() {
        row(
            &mut body,
            "point",
            &format!(
                "<code>{}</code> (line {})",
                escape(&text(&point["identity"])),
                text(&point["line"])
            ),
        );
    }
    if let Some(parent) = d["parent"].as_str() {
        row(&mut body, "parent", &instance_link(parent));
    }
    let children: Vec<String> = d["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(instance_link)
        .collect();
    if !children.is_empty() {
        row(&mut body, "children", &children.join(", "));
    }
    body.push_str("</tbody></table><h2>Locals</h2>");
    if d["locals"].is_object() {
        locals_table(&mut body, &d["locals"]);
    } else if let Some(e) = d["locals_error"].as_str() {
        let _ = write!(body, r#"<p class="error">{}</p>"#, escape(e));
    } else {
        body.push_str("<p>No frame: the instance is not parked at a suspension point.</p>");
    }
    page(&format!("Instance {id}"), &body).into_response()
}

async fn orchestrations(State(rt): State<Runtime>) -> Response {
    let mut body =
        String::from("<table><thead><tr><th>Name</th><th>Version</th></tr></thead><tbody>");
    for (name, version) in rt.orchestrations() {
        let _ = write!(
            body,
            r#"<tr><td>{}</td><td class="num">{version}</td></tr>"#,
            link("/orchestrations/", &name, &format!("?version={version}"), &name)
        );
    }
    body.push_str("</tbody></table>");
    page("Orchestrations", &body).into_response()
}

#[derive(serde::Deserialize, Default)]
struct VersionQuery {
    version: Option<u32>,
}

/// The graph and its SVG.
fn graph_and_svg(rt: &Runtime, name: &str, uri: &Uri) -> Result<(Value, String), ApiError> {
    let q: VersionQuery = match uri.query() {
        Some(raw) => serde_urlencoded_query(raw)?,
        None => VersionQuery::default(),
    };
    let graph = view::step_graph(rt, name, q.version)?;
    let json = view::graph(rt, name, Some(graph.version))?;
    let parked = |identity: &str| {
        json["points"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["identity"] == identity)
            .and_then(|p| p["parked"].as_u64())
            .unwrap_or(0)
    };
    let svg = crate::svg::draw(&graph, &parked);
    Ok((json, svg))
}

async fn orchestration(State(rt): State<Runtime>, Path(name): Path<String>, uri: Uri) -> Response {
    let key = name.clone();
    let (json, svg) = match view::off_thread(&rt, move |rt| graph_and_svg(rt, &key, &uri)).await {
        Ok(x) => x,
        Err(e) => return error_page(&e),
    };
    let version = text(&json["version"]);
    let mut body = format!(
        r#"<p>Version {version}. Click a point to see the instances parked there. {}</p>{svg}"#,
        link("/orchestrations/", &name, &format!("/graph.svg?version={version}"), "SVG")
    );
    body.push_str(r#"<h2>Suspension points</h2><table id="points"><thead><tr><th>Line</th><th>Operation</th><th>Identity</th><th>Stored locals</th><th>Parked</th></tr></thead><tbody>"#);
    for p in json["points"].as_array().into_iter().flatten() {
        let locals: Vec<String> = p["locals"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| format!("{}: {}", text(&l["name"]), text(&l["ty"])))
            .collect();
        let _ = write!(
            body,
            r#"<tr><td class="num">{}</td><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td><td class="num"><a href="/instances?orchestration={}&amp;point={}">{}</a></td></tr>"#,
            text(&p["line"]),
            escape(&text(&p["operation"])),
            escape(&text(&p["identity"])),
            escape(&locals.join(", ")),
            url_encode(&name),
            url_encode(&text(&p["identity"])),
            text(&p["parked"])
        );
    }
    body.push_str("</tbody></table>");
    page(&format!("Orchestration {name}"), &body).into_response()
}

async fn graph_svg(State(rt): State<Runtime>, Path(name): Path<String>, uri: Uri) -> Response {
    match view::off_thread(&rt, move |rt| graph_and_svg(rt, &name, &uri)).await {
        Ok((_, svg)) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_no_url_reaches_are_shown_without_a_link() {
        // `/instances/..` would open `/`, `/instances/.` the list: no link rather than a wrong one.
        assert_eq!(instance_link(".."), "..");
        assert_eq!(instance_link("."), ".");
        assert_eq!(instance_link("a<b"), r#"<a href="/instances/a%3Cb">a&lt;b</a>"#);
        assert_eq!(instance_link("..."), r#"<a href="/instances/...">...</a>"#);
        assert_eq!(
            link("/orchestrations/", "o&", "?version=2", "o&"),
            r#"<a href="/orchestrations/o%26?version=2">o&amp;</a>"#
        );
    }
}
