//! The admin server over HTTP: who gets in with what, where `?token=` sends a browser, and
//! that every error under `/api` is JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use durable_admin::{Admin, AdminOptions};
use durable_runtime::Runtime;
use reqwest::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[path = "../../tests/support/tempdir.rs"]
mod tempdir;
use tempdir::Dir;

/// A server over an empty runtime, and a client that does not follow redirects.
async fn served(dir: &Dir) -> (Runtime, Admin, reqwest::Client) {
    let rt = Runtime::open(&dir.0).await.expect("open");
    let admin = durable_admin::serve(rt.clone(), AdminOptions::new(&dir.0)).await.expect("serve");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    (rt, admin, client)
}

/// The status, the content type and the body of an answer parsed as JSON (`Null` if it is not).
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, String, Value) {
    let response = request.send().await.expect("send");
    let status = response.status();
    let kind = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .unwrap_or_default();
    let body = response.bytes().await.expect("body");
    (status, kind, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_browser_cookie_is_not_the_token_and_only_reads() {
    let dir = Dir::new("cookie");
    let (_rt, admin, client) = served(&dir).await;
    let (url, token) = (admin.url(), admin.token().to_owned());

    let response = client.get(format!("{url}/instances?token={token}")).send().await.expect("send");
    assert!(response.status().is_redirection(), "{response:?}");
    let set = response.headers().get(SET_COOKIE).expect("a cookie").to_str().expect("text");
    assert!(!set.contains(&token), "{set}");
    let pair = set.split(';').next().expect("name=value");
    let (name, value) = pair.split_once('=').expect("name=value");
    // Named for the port, so two servers on one host keep their own cookie.
    assert_eq!(name, format!("durable_admin_{}", admin.addr().port()));
    assert_ne!(value, token);

    // The cookie opens the pages and reads the API.
    let page = client.get(format!("{url}/instances")).header(COOKIE, pair).send().await;
    let page = page.expect("send");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("body").contains("<h1>Instances"));
    let (status, ..) =
        answer(client.get(format!("{url}/api/instances")).header(COOKIE, pair)).await;
    assert_eq!(status, StatusCode::OK);

    // The cookie value is not a bearer token, and the cookie changes nothing.
    let as_bearer = client.get(format!("{url}/api/instances")).bearer_auth(value);
    assert_eq!(answer(as_bearer).await.0, StatusCode::UNAUTHORIZED);
    let as_bearer = client.post(format!("{url}/api/instances/x/suspend")).bearer_auth(value);
    assert_eq!(answer(as_bearer).await.0, StatusCode::UNAUTHORIZED);
    let with_cookie = client.post(format!("{url}/api/instances/x/suspend")).header(COOKIE, pair);
    assert_eq!(answer(with_cookie).await.0, StatusCode::UNAUTHORIZED);
    // The token itself does (no instance `x`: 404, past the check).
    let with_token = client.post(format!("{url}/api/instances/x/suspend")).bearer_auth(&token);
    assert_eq!(answer(with_token).await.0, StatusCode::NOT_FOUND);
    admin.stop().await;
}

#[tokio::test]
async fn token_redirects_stay_on_this_server() {
    let dir = Dir::new("redirect");
    let (_rt, admin, client) = served(&dir).await;
    let (url, token) = (admin.url(), admin.token().to_owned());
    for (path, to) in [
        ("//evil.example/x?token=T&a=1", "/evil.example/x?a=1"),
        ("///evil.example?token=T", "/evil.example"),
        ("/instances?state=running&token=T", "/instances?state=running"),
    ] {
        let path = path.replace('T', &token);
        let response = client.get(format!("{url}{path}")).send().await.expect("send");
        assert!(response.status().is_redirection(), "{path}: {response:?}");
        let location = response.headers().get(LOCATION).expect("location").to_str();
        assert_eq!(location.expect("text"), to, "{path}");
    }
    admin.stop().await;
}

#[tokio::test]
async fn every_api_error_is_json() {
    let dir = Dir::new("errors");
    let (_rt, admin, client) = served(&dir).await;
    let (url, token) = (admin.url(), admin.token().to_owned());
    let call = |method: Method, path: &str| {
        client
            .request(method, format!("{url}{path}"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
    };
    let json_error = |(status, kind, body): (StatusCode, String, Value), expected: StatusCode| {
        assert_eq!(status, expected, "{kind} {body}");
        assert!(kind.starts_with("application/json"), "{status}: {kind}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{status}: {body}");
    };

    // Over the limit: the largest payload a runtime accepts (64 MiB) and room for whitespace.
    let over = vec![b' '; (64 << 20) + (64 << 10) + 1];
    let raised = answer(call(Method::POST, "/api/instances/x/events/e").body(over)).await;
    json_error(raised, StatusCode::PAYLOAD_TOO_LARGE);
    // Over axum's default of 2 MB but within the limit: read, and refused for the instance.
    let text = format!("\"{}\"", "a".repeat(3 << 20));
    let raised = answer(call(Method::POST, "/api/instances/x/events/e").body(text)).await;
    json_error(raised, StatusCode::NOT_FOUND);

    json_error(answer(call(Method::GET, "/api/instances/%FF")).await, StatusCode::BAD_REQUEST);
    json_error(
        answer(call(Method::POST, "/api/instances/%FF/cancel")).await,
        StatusCode::BAD_REQUEST,
    );

    let response = call(Method::PUT, "/api/instances").send().await.expect("send");
    assert!(response.headers().get(ALLOW).is_some(), "{response:?}");
    let kind = response.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?").to_owned());
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(kind.is_some_and(|k| k.starts_with("application/json")));
    let body: Value = response.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("PUT")), "{body}");
    json_error(
        answer(call(Method::GET, "/api/instances/x/cancel")).await,
        StatusCode::METHOD_NOT_ALLOWED,
    );
    admin.stop().await;
}

/// A sled store whose next scan, once armed, waits (blocking its thread, up to 10 s) until a
/// task of the runtime has run meanwhile.
struct Gate {
    inner: durable_runtime::store::SledStore,
    armed: AtomicBool,
    inside: AtomicBool,
    ticked: AtomicBool,
}

impl durable_runtime::store::Layer for Gate {
    fn inner(&self) -> &dyn durable_runtime::store::Store {
        &self.inner
    }
    fn scan(
        &self,
        space: durable_runtime::store::Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, durable_runtime::store::StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.inside.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.ticked.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.inside.store(false, Ordering::SeqCst);
        }
        durable_runtime::store::Store::scan(&self.inner, space, after, limit)
    }
}

/// A list that reads every record (a filter matching nothing) runs off the handler's thread:
/// on a runtime of one thread, a task still runs while the read is in progress.
#[tokio::test]
async fn reading_every_record_does_not_hold_up_the_runtime() {
    let dir = Dir::new("off-thread");
    let store = Arc::new(Gate {
        inner: durable_runtime::store::SledStore::open(&dir.0).expect("store"),
        armed: AtomicBool::new(false),
        inside: AtomicBool::new(false),
        ticked: AtomicBool::new(false),
    });
    let rt = Runtime::builder(&dir.0).store(store.clone()).open().await.expect("open");
    let admin = durable_admin::serve(rt.clone(), AdminOptions::new(&dir.0)).await.expect("serve");
    let gate = store.clone();
    let ticker = tokio::spawn(async move {
        loop {
            if gate.inside.load(Ordering::SeqCst) {
                gate.ticked.store(true, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    store.armed.store(true, Ordering::SeqCst);
    let listed = reqwest::Client::new()
        .get(format!("{}/api/instances?q=nothing-matches", admin.url()))
        .bearer_auth(admin.token())
        .send()
        .await
        .expect("send");
    assert_eq!(listed.status(), StatusCode::OK);
    assert!(!store.armed.load(Ordering::SeqCst), "the list scanned the store");
    assert!(store.ticked.load(Ordering::SeqCst), "no task ran while the list read the store");
    ticker.abort();
    admin.stop().await;
}
