//! The admin server over HTTP: authentication, the JSON endpoints, the write operations,
//! pagination, the step graph's counts against the list, `/metrics` and the web pages.

use std::time::Duration;

use durable::admin::{AdminOptions, TOKEN_FILE};
use durable::{Ctx, Failure, Runtime, orchestration};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    customer: String,
    amount: u32,
}

#[orchestration]
async fn review(ctx: Ctx, order: Order) -> Result<String, Failure> {
    let note = format!("{} wants {}", order.customer, order.amount);
    let approved = ctx.wait_event::<bool>("approval").await?;
    ctx.sleep(Duration::from_millis(1)).await;
    Ok(format!("{note}: {}", if approved { "approved" } else { "rejected" }))
}

const N: usize = 23;

struct Fixture {
    _dir: tempdir::Dir,
    rt: Runtime,
    admin: durable::admin::Admin,
    client: reqwest::Client,
}

#[path = "support/tempdir.rs"]
mod tempdir;

impl Fixture {
    async fn new(name: &str) -> Fixture {
        let dir = tempdir::Dir::new(name);
        // The steps below run before the server starts: counted only with the recorder in place.
        assert!(durable::admin::install_metrics());
        let rt = Runtime::builder(&dir.0).orchestration(review).open().await.expect("open");
        for n in 0..N {
            let order = Order { customer: format!("c{n}"), amount: u32::try_from(n).unwrap_or(0) };
            rt.start(review, format!("order-{n:02}"), order).await.expect("start");
        }
        // Every instance reaches its wait.
        for _ in 0..500 {
            let parked = rt.point_counts("review").expect("counts");
            if parked.iter().map(|c| c.instances).sum::<u64>() == u64::try_from(N).unwrap_or(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let admin =
            durable::admin::serve(rt.clone(), AdminOptions::new(&dir.0)).await.expect("serve");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Fixture { _dir: dir, rt, admin, client }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.admin.url())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(self.admin.token())
            .send()
            .await
            .expect("send");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(self.admin.token())
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("send");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_needs_the_token_and_the_browser_gets_a_cookie() {
    let f = Fixture::new("auth").await;
    for path in ["/api/instances", "/metrics", "/instances", "/orchestrations/review", "/nope"] {
        let r = f.client.get(f.url(path)).send().await.expect("send");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} without a token");
        let r = f.client.get(f.url(path)).bearer_auth("wrong").send().await.expect("send");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} with a wrong token");
    }
    let r = f.client.post(f.url("/api/instances/order-01/cancel")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The token file holds the token, readable by its owner only.
    let file = f.admin.token_file().expect("token file");
    assert!(file.ends_with(TOKEN_FILE));
    assert_eq!(std::fs::read_to_string(file).expect("read").trim(), f.admin.token());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // `?token=` sets an HttpOnly SameSite cookie and drops the token from the URL.
    let r = f
        .client
        .get(f.url(&format!("/instances?state=running&token={}", f.admin.token())))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/instances?state=running");
    let cookie = r.headers()["set-cookie"].to_str().expect("ascii").to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().expect("pair").to_owned();
    let r = f.client.get(f.url("/instances")).header("cookie", &pair).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    // The cookie reads, it does not write.
    let r = f
        .client
        .post(f.url("/api/instances/order-01/cancel"))
        .header("cookie", &pair)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = f.client.get(f.url("/instances?token=wrong")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cover_every_instance_once_and_the_graph_counts_match_the_list() {
    let f = Fixture::new("pages").await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/instances?limit=5&after={a}"),
            None => "/api/instances?limit=5".to_owned(),
        };
        let (status, page) = f.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        let items = page["instances"].as_array().expect("instances").clone();
        assert!(items.len() <= 5);
        seen.extend(items.iter().map(|i| i["id"].as_str().expect("id").to_owned()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..N).map(|n| format!("order-{n:02}")).collect();
    assert_eq!(seen, expected);

    let (status, graph) = f.get("/api/orchestrations/review").await;
    assert_eq!(status, StatusCode::OK);
    let points = graph["points"].as_array().expect("points");
    assert_eq!(points.len(), 2, "{graph}");
    let wait = points
        .iter()
        .find(|p| p["operation"].as_str().is_some_and(|o| o.contains("wait_event")))
        .expect("wait point");
    let identity = wait["identity"].as_str().expect("identity");
    let (_, listed) =
        f.get(&format!("/api/instances?limit=1000&point={}", urlencode(identity))).await;
    let listed = listed["instances"].as_array().expect("instances").len();
    assert_eq!(wait["parked"], json!(listed));
    assert_eq!(listed, N);
    let total: u64 = points.iter().filter_map(|p| p["parked"].as_u64()).sum();
    assert_eq!(total, u64::try_from(N).unwrap_or(0));

    let (status, filtered) = f.get("/api/instances?state=completed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(filtered["instances"], json!([]));
    let (status, found) = f.get("/api/instances?q=der-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["instances"].as_array().map(Vec::len), Some(10));
    let (status, body) = f.get("/api/instances?state=sleeping").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("sleeping")), "{body}");
    let (status, _) = f.get("/api/instances?limit=many").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = f.get("/api/orchestrations/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_decodes_locals_and_write_operations_change_instances() {
    let f = Fixture::new("writes").await;
    let (status, d) = f.get("/api/instances/order-03").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["state"], "running");
    assert_eq!(d["pending"].as_str().map(|p| p.contains("approval")), Some(true), "{d}");
    let locals = d["locals"]["locals"].as_array().expect("locals");
    let note = locals.iter().find(|l| l["name"] == "note").expect("note");
    assert_eq!(note["value"], "c3 wants 3");

    let (status, e) = f.get("/api/instances/no-such-order").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(e["error"].as_str().is_some());
    let (status, _) = f.post("/api/instances/no-such-order/suspend", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Raise: bad JSON, then the real thing (any JSON value; the waiter's type decodes it).
    let (status, e) = f.post("/api/instances/order-03/events/approval", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().is_some_and(|m| m.contains("JSON")), "{e}");
    let (status, _) = f.post("/api/instances/order-03/events/approval", "true").await;
    assert_eq!(status, StatusCode::OK);
    let out = f.rt.handle::<review>("order-03").wait_timeout(Duration::from_secs(20)).await;
    assert_eq!(out.expect("in time").expect("completed"), "c3 wants 3: approved");
    let (_, d) = f.get("/api/instances/order-03").await;
    assert_eq!(d["state"], "completed");
    assert_eq!(d["output"], "c3 wants 3: approved");
    let (status, _) = f.post("/api/instances/order-03/events/approval", "true").await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Suspend and resume.
    let (status, _) = f.post("/api/instances/order-04/suspend", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f.get("/api/instances/order-04").await.1["state"], "suspended");
    let (status, _) = f.post("/api/instances/order-04/resume", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f.get("/api/instances/order-04").await.1["state"], "running");

    // Cancel: bad body, then a reason.
    let (status, _) = f.post("/api/instances/order-05/cancel", r#"{"why": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = f.post("/api/instances/order-05/cancel", r#"{"reason": "duplicate"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let cancelled = f.rt.handle::<review>("order-05").wait_timeout(Duration::from_secs(20)).await;
    assert!(
        matches!(cancelled, Some(Err(durable::InstanceError::Cancelled(r))) if r == "duplicate")
    );

    // Purge: refused while running, then gone.
    let del = |id: &str| {
        f.client.delete(f.url(&format!("/api/instances/{id}"))).bearer_auth(f.admin.token()).send()
    };
    assert_eq!(del("order-06").await.expect("send").status(), StatusCode::CONFLICT);
    assert_eq!(del("order-05").await.expect("send").status(), StatusCode::OK);
    assert_eq!(f.get("/api/instances/order-05").await.0, StatusCode::NOT_FOUND);
    assert_eq!(del("order-05").await.expect("send").status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_pages_show_the_instances() {
    let f = Fixture::new("metrics").await;
    let r =
        f.client.get(f.url("/metrics")).bearer_auth(f.admin.token()).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().is_ok_and(|c| c.starts_with("text/plain")));
    let text = r.text().await.expect("text");
    for needle in [
        "durable_steps_total{orchestration=\"review\"}",
        "durable_step_seconds_bucket",
        "durable_commit_seconds_bucket",
        "durable_commit_batch_size_bucket",
        "# TYPE durable_instances gauge",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // This test's runtime has N running instances; other tests' runtimes count theirs
    // separately, so the gauge is checked against this runtime's list.
    let running = text
        .lines()
        .find_map(|l| l.strip_prefix("durable_instances{state=\"running\"} "))
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(running, Some(N));

    let page = |path: &str| {
        let req = f.client.get(f.url(path)).bearer_auth(f.admin.token());
        async move { req.send().await.expect("send").text().await.expect("text") }
    };
    let html = page("/instances?limit=1000").await;
    assert_eq!(html.matches("<tr data-id=").count(), N);
    let html = page("/orchestrations/review").await;
    assert_eq!(html.matches(r#"<g class="point""#).count(), 2);
    assert!(html.contains(&format!(r#"data-parked="{N}""#)), "{html}");
    let html = page("/instances/order-02").await;
    assert!(html.contains("c2 wants 2"), "{html}");
    let svg = page("/orchestrations/review/graph.svg").await;
    assert!(svg.starts_with("<svg"));
}
