//! The `durable` binary against a served runtime (`--url`, `--db` of a held database) and
//! against a database directory no process holds.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use durable::admin::AdminOptions;
use durable::{Ctx, Failure, Runtime, orchestration};
use serde_json::Value;

#[orchestration]
async fn approval(ctx: Ctx, what: String) -> Result<String, Failure> {
    let asked = format!("approve {what}?");
    let yes = ctx.wait_event::<bool>("approval").await?;
    Ok(format!("{asked} {}", if yes { "yes" } else { "no" }))
}

#[path = "../../tests/support/tempdir.rs"]
mod tempdir;
use tempdir::Dir;

async fn durable(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_durable"))
            .args(&args)
            .env_remove("DURABLE_ADMIN_URL")
            .env_remove("DURABLE_ADMIN_TOKEN")
            .env_remove("DURABLE_DB")
            .output()
            .expect("run durable")
    })
    .await
    .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn started(dir: &Path, n: usize) -> Runtime {
    let rt = Runtime::builder(dir).orchestration(approval).open().await.expect("open");
    for i in 0..n {
        rt.start(approval, format!("req-{i}"), format!("thing {i}")).await.expect("start");
    }
    for _ in 0..500 {
        if rt.point_counts("approval").expect("counts").iter().map(|c| c.instances).sum::<u64>()
            == u64::try_from(n).unwrap_or(0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_running_process() {
    let dir = Dir::new("served");
    let rt = started(&dir.0, 4).await;
    let admin = durable::admin::serve(rt.clone(), AdminOptions::new(&dir.0)).await.expect("serve");
    let url = admin.url();
    let token = admin.token().to_owned();
    let db = dir.0.display().to_string();

    // An aligned table: every row's columns start where the header's do.
    let out = durable(&["--url", &url, "--token", &token, "list"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let state_col = lines[0].find("STATE").expect("STATE column");
    for line in &lines[1..] {
        assert_eq!(&line[state_col..state_col + 7], "running", "{text}");
    }

    // --db of a held database finds the server through the files the server wrote.
    let out = durable(&["--db", &db, "--json", "show", "req-2"]).await;
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["locals"]["locals"][0]["value"], "approve thing 2?");
    let out = durable(&["--db", &db, "show", "req-2"]).await;
    assert!(stdout(&out).contains(r#"asked = "approve thing 2?""#), "{}", stdout(&out));

    let out = durable(&["--db", &db, "--json", "graph", "approval"]).await;
    assert!(out.status.success(), "{out:?}");
    let graph: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(graph["points"][0]["parked"], 4);
    let out = durable(&["--db", &db, "graph", "approval"]).await;
    assert!(stdout(&out).contains("PARKED"), "{}", stdout(&out));

    let out = durable(&["--db", &db, "raise", "req-1", "approval", "true"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "raised `approval` for req-1\n");
    let result = rt.handle::<approval>("req-1").wait_timeout(Duration::from_secs(20)).await;
    assert_eq!(result.expect("in time").expect("done"), "approve thing 1? yes");

    // Exit codes scripts can use.
    let code = |o: &Output| o.status.code();
    assert_eq!(code(&durable(&["--db", &db, "show", "nobody"]).await), Some(3));
    assert_eq!(code(&durable(&["--db", &db, "raise", "req-1", "approval", "true"]).await), Some(4));
    assert_eq!(code(&durable(&["--db", &db, "raise", "req-0", "approval", "yes"]).await), Some(7));
    assert_eq!(code(&durable(&["--url", &url, "--token", "wrong", "list"]).await), Some(5));
    assert_eq!(
        code(&durable(&["--url", "http://127.0.0.1:1", "--token", "t", "list"]).await),
        Some(6)
    );
    assert_eq!(code(&durable(&["list"]).await), Some(2));
    assert_eq!(code(&durable(&["list", "--bogus"]).await), Some(2));
    for command in ["list", "show", "graph", "raise", "cancel", "suspend", "resume", "purge"] {
        let out = durable(&[command, "--help"]).await;
        assert!(out.status.success() && stdout(&out).contains("Exit codes"), "{command} --help");
    }

    let out = durable(&["--db", &db, "suspend", "req-3"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        rt.status("req-3").expect("status").expect("exists").state,
        durable::InstanceState::Suspended
    );
    admin.stop().await;
}

/// A runtime serving its admin API in `dir`, with an `approval` instance for each of `ids`
/// parked at its wait.
async fn serving(dir: &Path, ids: &[&str]) -> (Runtime, durable::admin::Admin) {
    let rt = Runtime::builder(dir).orchestration(approval).open().await.expect("open");
    for id in ids {
        rt.start(approval, *id, format!("thing {id}")).await.expect("start");
    }
    for _ in 0..500 {
        let parked: u64 =
            rt.point_counts("approval").expect("counts").iter().map(|c| c.instances).sum();
        if parked == u64::try_from(ids.len()).unwrap_or(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let admin = durable::admin::serve(rt.clone(), AdminOptions::new(dir)).await.expect("serve");
    (rt, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_ids_are_refused_rather_than_sent_to_another_instance() {
    let dir = Dir::new("dots");
    let (rt, admin) = serving(&dir.0, &[".", "..", "events", "x"]).await;
    let (url, token) = (admin.url(), admin.token().to_owned());
    let at = |args: &[&str]| {
        let mut v = vec!["--url", url.as_str(), "--token", token.as_str()];
        v.extend_from_slice(args);
        v.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| async move {
        durable(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
    };

    // A URL would turn `/api/instances/./events/cancel` into `/api/instances/events/cancel`.
    let out = run(at(&["raise", ".", "cancel", "{}"])).await;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`.`"), "{out:?}");
    for args in [
        &["cancel", ".."][..],
        &["suspend", "."],
        &["resume", ".."],
        &["purge", "."],
        &["show", ".."],
        &["raise", "x", "..", "true"],
        &["graph", "."],
    ] {
        assert_eq!(run(at(args)).await.status.code(), Some(7), "{args:?}");
    }

    // `events` and `x` were not touched: each still takes its approval and completes.
    for id in ["events", "x"] {
        let status = rt.status(id).expect("status").expect("exists");
        assert_eq!(status.state, durable::InstanceState::Running, "{id}");
        assert_eq!(status.buffered_events, 0, "{id}");
        rt.raise_event(id, "approval", &true).await.expect("raise");
        let done = rt.handle::<approval>(id).wait_timeout(Duration::from_secs(20)).await;
        assert_eq!(done.expect("in time").expect("done"), format!("approve thing {id}? yes"));
    }
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steering_says_what_happened() {
    let dir = Dir::new("steer");
    // A client-only runtime runs nothing, so a recorded cancel stays unapplied, as it does
    // while a step runs or until a process that runs the orchestration gets to it.
    let rt = Runtime::builder(&dir.0).orchestration(approval).worker(false).open().await;
    let rt = rt.expect("open");
    for id in ["a", "b"] {
        rt.start(approval, id, format!("thing {id}")).await.expect("start");
    }
    let admin = durable::admin::serve(rt.clone(), AdminOptions::new(&dir.0)).await.expect("serve");
    let (url, token) = (admin.url(), admin.token().to_owned());
    let said = |args: &[&str]| {
        let mut v = vec!["--url", url.as_str(), "--token", token.as_str()];
        v.extend_from_slice(args);
        let v: Vec<String> = v.into_iter().map(str::to_owned).collect();
        async move {
            let out = durable(&v.iter().map(String::as_str).collect::<Vec<_>>()).await;
            assert!(out.status.success(), "{out:?}");
            stdout(&out)
        }
    };

    assert_eq!(
        said(&["cancel", "a"]).await,
        "cancel requested for a (it is running): a process that runs its orchestration applies \
         it at its next suspension point\n"
    );
    let answer: Value =
        serde_json::from_str(&said(&["--json", "cancel", "a"]).await).expect("json");
    assert_eq!(answer["cancelled"], "a", "the old field stays: {answer}");
    assert_eq!(answer["state"], "running", "{answer}");

    assert_eq!(said(&["resume", "b"]).await, "b was not suspended (it is running)\n");
    assert_eq!(said(&["suspend", "b"]).await, "suspended b\n");
    assert_eq!(said(&["suspend", "b"]).await, "b was already suspended\n");
    assert_eq!(said(&["resume", "b"]).await, "resumed b (it is running)\n");
    admin.stop().await;
    rt.shutdown().await;
}

/// Fails unless `text` holds no character a terminal acts on but the line ends.
fn assert_inert(text: &str) {
    let bad = |c: char| {
        c != '\n'
            && (c.is_control()
                || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}')
                || matches!(c, '\u{2066}'..='\u{2069}'))
    };
    assert!(!text.chars().any(bad), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_shown_escaped() {
    let dir = Dir::new("controls");
    let forged = "x\nreq-9  approval  completed";
    let ids = [forged, "\x1b[2J", "cr\rtab\t", "c1\u{9b}31m", "bidi\u{202e}txt"];
    let (rt, admin) = serving(&dir.0, &ids).await;
    let (url, token) = (admin.url(), admin.token().to_owned());
    let cli = |args: &[&str]| {
        let mut v = vec!["--url", url.as_str(), "--token", token.as_str()];
        v.extend_from_slice(args);
        v.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| async move {
        durable(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
    };

    // One row per instance: no id forges one, none clears the screen.
    let out = run(cli(&["list"])).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert_inert(&text);
    assert_eq!(text.lines().count(), ids.len() + 1, "{text}");
    assert!(text.contains(r"x\nreq-9  approval  completed"), "{text}");
    assert!(text.contains(r"\x1b[2J"), "{text}");
    assert!(text.contains(r"bidi\u{202e}txt"), "{text}");
    let out = run(cli(&["list", "--limit", "1"])).await;
    assert_inert(&stdout(&out));
    assert!(stdout(&out).contains(r"(more: --after \x1b[2J)"), "{}", stdout(&out));

    // The output, written by the orchestration from the id, is escaped too.
    for id in ids {
        let out = run(cli(&["raise", id, "approval", "true"])).await;
        assert!(out.status.success(), "{out:?}");
        assert_inert(&stdout(&out));
        let done = rt.handle::<approval>(id).wait_timeout(Duration::from_secs(20)).await;
        assert!(done.expect("in time").is_ok());
        let out = run(cli(&["show", id])).await;
        assert!(out.status.success(), "{out:?}");
        assert_inert(&stdout(&out));
        assert!(stdout(&out).contains("output:"), "{}", stdout(&out));
    }
    // Errors name the id: escaped on stderr as well.
    let out = run(cli(&["show", "\x1b[2Jnobody\u{202e}"])).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_inert(&err);
    assert!(err.contains(r"\x1b[2Jnobody\u{202e}"), "{err}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_closed_database() {
    let dir = Dir::new("closed");
    let rt = started(&dir.0, 3).await;
    rt.shutdown().await;
    drop(rt);
    let db = dir.0.display().to_string();

    let mut out = durable(&["--db", &db, "--json", "list"]).await;
    for _ in 0..50 {
        // The last clone's store may still be closing.
        if out.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = durable(&["--db", &db, "--json", "list"]).await;
    }
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<&str> = list["instances"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, ["req-0", "req-1", "req-2"]);
    // Not registered in the CLI's process: shown as such, locals not decoded but named.
    assert_eq!(list["instances"][0]["state"], "unregistered");
    let out = durable(&["--db", &db, "show", "req-0"]).await;
    assert!(
        stdout(&out).contains("stored locals:   asked: alloc::string::String"),
        "{}",
        stdout(&out)
    );
    assert_eq!(durable(&["--db", &db, "graph", "approval"]).await.status.code(), Some(3));

    assert!(durable(&["--db", &db, "raise", "req-0", "approval", "false"]).await.status.success());
    assert!(
        durable(&["--db", &db, "cancel", "req-1", "--reason", "not needed"]).await.status.success()
    );

    // A process that registers the orchestration applies what the CLI recorded.
    let rt = Runtime::builder(&dir.0).orchestration(approval).open().await.expect("reopen");
    let r0 = rt.handle::<approval>("req-0").wait_timeout(Duration::from_secs(20)).await;
    assert_eq!(r0.expect("in time").expect("done"), "approve thing 0? no");
    let r1 = rt.handle::<approval>("req-1").wait_timeout(Duration::from_secs(20)).await;
    assert!(matches!(r1, Some(Err(durable::InstanceError::Cancelled(r))) if r == "not needed"));
    rt.shutdown().await;
    drop(rt);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut out = durable(&["--db", &db, "purge", "req-0"]).await;
    for _ in 0..50 {
        if out.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = durable(&["--db", &db, "purge", "req-0"]).await;
    }
    assert!(out.status.success(), "{out:?}");
    assert_eq!(durable(&["--db", &db, "show", "req-0"]).await.status.code(), Some(3));
}

/// The PostgreSQL server of `DURABLE_PG`; fails (never skips) when it is unset.
fn postgres() -> String {
    match std::env::var("DURABLE_PG") {
        Ok(c) if !c.trim().is_empty() => c,
        _ => panic!(
            "DURABLE_PG is not set: this test needs a PostgreSQL server. Start a throwaway one \
             with `eval \"$(.ci/postgres start)\"` from the repository root."
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_shared_postgres_database_while_a_worker_runs_it() {
    let conninfo = postgres();
    let schema = format!("cli_{}", std::process::id());
    let store = durable_postgres::PgStore::connect_in(&conninfo, &schema).expect("connect");
    // The worker: another runtime (as another process would be), with its own store.
    let rt = Runtime::builder("unused")
        .store(std::sync::Arc::new(store))
        .orchestration(approval)
        .open()
        .await
        .expect("open");
    let handle = rt.start(approval, "pg-req", "a desk".to_owned()).await.expect("start");
    let at = |args: &[&str]| {
        let mut v = vec!["--postgres", conninfo.as_str(), "--pg-schema", schema.as_str()];
        v.extend_from_slice(args);
        v.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    for _ in 0..500 {
        let out = durable(
            &at(&["--json", "show", "pg-req"]).iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
        if stdout(&out).contains("approval") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let list = durable(&at(&["list"]).iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(list.status.success(), "{list:?}");
    assert!(stdout(&list).contains("pg-req"), "{}", stdout(&list));
    // The command raises the event; the worker, in another runtime, takes it and finishes.
    let raised = durable(
        &at(&["raise", "pg-req", "approval", "true"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(raised.status.success(), "{raised:?}");
    let out = handle.wait_timeout(Duration::from_secs(30)).await.expect("finishes").expect("ok");
    assert_eq!(out, "approve a desk? yes");
    let shown =
        durable(&at(&["show", "pg-req"]).iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(stdout(&shown).to_lowercase().contains("completed"), "{}", stdout(&shown));
    rt.shutdown().await;
}
