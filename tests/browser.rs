//! The web view in a real browser: headless Chromium loads the pages of an admin server over a
//! runtime with a few hundred instances parked at a `wait_event`, through the `?token=` cookie
//! flow, with its script running; the DOM it ends with is checked against the JSON API.
//!
//! Needs `chromium` (Debian's package; `.ci/run` installs it when missing). Without it the test
//! fails under CI (`CI` set) and is skipped, saying so, elsewhere.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use durable::admin::AdminOptions;
use durable::{Ctx, Durability, Failure, Runtime, orchestration};
use serde_json::Value;

#[orchestration]
async fn approval(ctx: Ctx, what: String) -> Result<String, Failure> {
    let asked = format!("approve {what}?");
    ctx.sleep(Duration::from_millis(1)).await;
    let yes = ctx.wait_event::<bool>("approval").await?;
    Ok(format!("{asked} {yes}"))
}

const INSTANCES: usize = 300;

fn chromium() -> Option<PathBuf> {
    let candidates = ["chromium", "chromium-browser", "google-chrome"];
    let path = std::env::var_os("PATH")?;
    candidates
        .iter()
        .flat_map(|c| std::env::split_paths(&path).map(move |d| d.join(c)))
        .find(|p| p.is_file())
}

/// The DOM of `url` after its scripts ran for `budget_ms` of virtual time.
fn dump_dom(browser: &PathBuf, url: &str, budget_ms: u32) -> String {
    let profile =
        std::env::temp_dir().join(format!("durable-browser-{}-{budget_ms}", std::process::id()));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom",
            url,
        ])
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_load_in_chromium_and_match_the_api() {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "chromium is not installed; .ci/run installs it");
        eprintln!("skipped: chromium is not installed");
        return;
    };
    let dir = std::env::temp_dir().join(format!("durable-browser-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = Runtime::builder(&dir)
        .orchestration(approval)
        .durability(Durability::Buffered)
        .open()
        .await
        .expect("open");
    for n in 0..INSTANCES {
        rt.start(approval, format!("approval-{n:03}"), format!("order {n}")).await.expect("start");
    }
    let total = u64::try_from(INSTANCES).unwrap_or(0);
    for _ in 0..1000 {
        let counts = rt.point_counts("approval").expect("counts");
        if counts.iter().find(|c| c.point.contains("wait_event")).map(|c| c.instances)
            == Some(total)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = durable::admin::serve(rt.clone(), AdminOptions::new(&dir)).await.expect("serve");
    let base = admin.url();
    let token = admin.token().to_owned();
    let api = reqwest::Client::new()
        .get(format!("{base}/api/orchestrations/approval"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("api")
        .json::<Value>()
        .await
        .expect("json");
    let points = api["points"].as_array().expect("points").clone();

    let b = browser.clone();
    let url = format!("{base}/orchestrations/approval?token={token}");
    let graph_dom =
        tokio::task::spawn_blocking(move || dump_dom(&b, &url, 1000)).await.expect("join");
    // One node per suspension point, each with the API's count and a link to its instances.
    assert_eq!(graph_dom.matches(r#"<g class="point""#).count(), points.len(), "{graph_dom}");
    for p in &points {
        let identity = p["identity"].as_str().expect("identity");
        let node = format!(
            r#"data-point="{identity}" data-line="{}" data-parked="{}""#,
            p["line"], p["parked"]
        );
        assert!(graph_dom.contains(&node), "{node} not in\n{graph_dom}");
    }
    let wait = points
        .iter()
        .find(|p| p["identity"].as_str().is_some_and(|i| i.contains("wait_event")))
        .expect("wait point");
    assert_eq!(wait["parked"].as_u64(), Some(total));

    // The instances page, with the live refresh running: the table is refetched (with the
    // cookie the first request set) and replaced.
    let b = browser.clone();
    let url = format!("{base}/instances?limit=1000&live=1&token={token}");
    let list_dom =
        tokio::task::spawn_blocking(move || dump_dom(&b, &url, 5000)).await.expect("join");
    assert_eq!(list_dom.matches("<tr data-id=").count(), INSTANCES);
    assert!(list_dom.contains(r#"id="live" checked"#));
    assert!(list_dom.contains("data-refreshed="), "the live refresh did not run");

    // The instance page shows the decoded locals.
    let b = browser.clone();
    let url = format!("{base}/instances/approval-042?token={token}");
    let one = tokio::task::spawn_blocking(move || dump_dom(&b, &url, 500)).await.expect("join");
    assert!(one.contains("approve order 42?"), "{one}");
    assert!(one.contains(r#"<span class="state-running" id="state">running</span>"#), "{one}");

    // Without the token the browser is refused.
    let b = browser.clone();
    let url = format!("{base}/instances");
    let refused = tokio::task::spawn_blocking(move || dump_dom(&b, &url, 200)).await.expect("join");
    assert!(refused.contains("a valid token is required"), "{refused}");

    admin.stop().await;
    rt.shutdown().await;
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}
