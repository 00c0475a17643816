//! In-process crash harness: run an orchestration, stop the runtime at a chosen checkpoint,
//! reopen the database, and compare the result with an uninterrupted run.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use durable::{ActivityContext, Orchestration, OrchestrationOutput, Runtime, RuntimeBuilder};

fn frozen() -> &'static Mutex<HashSet<String>> {
    static F: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    F.get_or_init(Default::default)
}

fn runs() -> &'static Mutex<BTreeMap<(String, String), u64>> {
    static R: OnceLock<Mutex<BTreeMap<(String, String), u64>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Holds the activities of `instance` before they start (as a crash right after a checkpoint
/// would), until [`thaw`].
pub fn freeze(instance: &str) {
    frozen().lock().unwrap().insert(instance.to_owned());
}

/// Lets the activities of `instance` run again.
pub fn thaw(instance: &str) {
    frozen().lock().unwrap().remove(instance);
}

/// Call at the start of every test activity: waits while its instance is frozen, then counts
/// one execution under its idempotency key.
pub async fn activity_body(ctx: &ActivityContext) {
    loop {
        if !frozen().lock().unwrap().contains(ctx.instance_id()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    *runs()
        .lock()
        .unwrap()
        .entry((ctx.instance_id().to_owned(), format!("{}@{}", ctx.name(), ctx.idempotency_key())))
        .or_default() += 1;
}

/// Executions per activity call of `instance`.
pub fn executions(instance: &str) -> BTreeMap<String, u64> {
    runs()
        .lock()
        .unwrap()
        .iter()
        .filter(|((i, _), _)| i == instance)
        .map(|((_, k), n)| (k.clone(), *n))
        .collect()
}

/// A fresh database directory.
pub fn fresh_db(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().join("scratch").join("dbs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

/// Opens, retrying while the previous runtime's files are being released.
pub async fn open(builder: impl Fn() -> RuntimeBuilder) -> Runtime {
    for _ in 0..200 {
        match builder().open().await {
            Ok(rt) => return rt,
            Err(durable::OpenError::Store(durable::store::StoreError::Locked { .. })) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("open: {e}"),
        }
    }
    panic!("database stayed locked");
}

type Out<O> = <<O as Orchestration>::Output as OrchestrationOutput>::Ok;

/// Runs `orch` once without interruption, then once more for every checkpoint `k`, stopping the
/// runtime right after checkpoint `k` and reopening it. Asserts that every run gives the same
/// output and that every activity call ran exactly once (a stopped step's activity is held
/// before it starts, so nothing completed ever runs twice). Returns the output and the number
/// of checkpoints.
pub async fn stop_at_every_point<O>(orch: fn() -> O, name: &str, input: O::Input) -> (Out<O>, u64)
where
    O: Orchestration,
    O::Input: Clone,
    Out<O>: PartialEq + std::fmt::Debug,
{
    let reference_id = format!("{name}-ref");
    let db = fresh_db(&reference_id);
    let rt = open(|| Runtime::builder(&db).orchestration(orch)).await;
    let reference = rt
        .start(orch, reference_id.clone(), input.clone())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_or_else(|e| panic!("{name}: reference run failed: {e}"));
    let steps = rt.status(&reference_id).unwrap().unwrap().steps;
    rt.shutdown().await;
    drop(rt);
    for (key, n) in executions(&reference_id) {
        assert_eq!(n, 1, "{name}: reference run executed {key} {n} times");
    }
    let ref_calls = executions(&reference_id).len();

    for k in 1..steps {
        let id = format!("{name}-stop{k}");
        let db = fresh_db(&id);
        let reached = Arc::new(tokio::sync::Notify::new());
        let target = Arc::new(AtomicU64::new(k));
        let builder = {
            let (id, reached, target, db) =
                (id.clone(), reached.clone(), target.clone(), db.clone());
            move || {
                let (id, reached, target) = (id.clone(), reached.clone(), target.clone());
                Runtime::builder(&db).orchestration(orch).on_step(move |e| {
                    if e.instance == id && e.step == target.load(Ordering::SeqCst) {
                        frozen().lock().unwrap().insert(id.clone());
                        reached.notify_one();
                    }
                })
            }
        };
        let rt = open(&builder).await;
        let notified = reached.notified();
        rt.start(orch, id.clone(), input.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), notified)
            .await
            .unwrap_or_else(|_| panic!("{name}: checkpoint {k} never came"));
        rt.shutdown().await;
        drop(rt);
        target.store(u64::MAX, Ordering::SeqCst);
        frozen().lock().unwrap().remove(&id);
        let rt = open(&builder).await;
        let out = rt
            .handle::<O>(id.clone())
            .wait_timeout(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("{name}: stopped at {k}: no result"))
            .unwrap_or_else(|e| panic!("{name}: stopped at {k}: {e}"));
        assert_eq!(out, reference, "{name}: stopped at checkpoint {k}");
        let calls = executions(&id);
        assert_eq!(calls.len(), ref_calls, "{name}: stopped at {k}: calls {calls:?}");
        for (key, n) in calls {
            assert_eq!(n, 1, "{name}: stopped at checkpoint {k}: {key} ran {n} times");
        }
        rt.shutdown().await;
    }
    (reference, steps)
}
