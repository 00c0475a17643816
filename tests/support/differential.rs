//! The differential tester: one body, compiled twice by [`differential_case!`], once as a plain
//! `async fn` whose activity calls are plain async calls and once as an `#[orchestration]`.
//! A case passes when the plain run, the uninterrupted durable run and a durable run stopped
//! right after checkpoint `k` and resumed, for every `k`, give the same output and make the same
//! activity calls, and no activity call completed before a stop runs again after it.
//!
//! Two ways to stop: in process ([`check_in_process`]: the runtime is shut down right after
//! checkpoint `k`, with the activities of the next step held back, and the database reopened),
//! and with a real process per stop ([`check_with_processes`]: the driver binary aborts itself
//! right after checkpoint `k` and a new process resumes).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use durable::{
    Activity, ActivityContext, ActivityError, Runtime, RuntimeBuilder, StepEvent, activity,
};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A case as the runners see it: outputs are compared as their `Debug` text.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    /// Whether runs stopped after a checkpoint must equal the plain run. `false` for cases that
    /// observe what a restart documents to differ (`#[serde(skip)]` fields, `Drop`).
    pub restarts: bool,
    /// Runs the plain body as run `id`.
    pub plain: fn(String) -> BoxFuture<Result<String, String>>,
    /// Registers the orchestration.
    pub register: fn(RuntimeBuilder) -> RuntimeBuilder,
    /// Starts the durable body as instance `id` (idempotent).
    pub start: fn(Runtime, String) -> BoxFuture<Result<(), String>>,
    /// Waits for instance `id`.
    pub wait: fn(Runtime, String) -> BoxFuture<Result<String, String>>,
}

/// Emits a [`Case`] named `$name` from one body: `differential_case!(name, restarts, (x: T =
/// value), |ctx| -> Out { body })`. The body returns `Result<Out, durable::Failure>`.
macro_rules! differential_case {
    ($name:ident, $restarts:expr, ($input:ident : $ity:ty = $value:expr), |$ctx:ident| -> $out:ty { $($body:tt)* }) => {
        pub mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::differential::*;

            #[::durable::orchestration]
            pub async fn durable_body($ctx: ::durable::Ctx, $input: $ity) -> ::core::result::Result<$out, ::durable::Failure> {
                $($body)*
            }

            #[allow(unused_mut, unused_variables, unused_assignments, unused_parens, unreachable_code, clippy::all)]
            pub async fn plain_body($ctx: PlainCtx, $input: $ity) -> ::core::result::Result<$out, ::durable::Failure> {
                $($body)*
            }

            pub fn input() -> $ity {
                $value
            }

            pub const CASE: Case = Case {
                name: stringify!($name),
                restarts: $restarts,
                plain: |id| Box::pin(async move { show(plain_body(PlainCtx::new(&id), input()).await) }),
                register: |b| b.orchestration(durable_body),
                start: |rt, id| Box::pin(async move {
                    rt.start(durable_body, id, input()).await.map(|_| ()).map_err(|e| e.to_string())
                }),
                wait: |rt, id| Box::pin(async move {
                    match rt.handle::<durable_body>(id).wait_timeout(::std::time::Duration::from_secs(60)).await {
                        None => Err("no result within 60 s".to_string()),
                        Some(Ok(v)) => Ok(format!("{v:?}")),
                        Some(Err(::durable::InstanceError::Failed { message, .. })) => Err(message),
                        Some(Err(e)) => Err(format!("faulted: {e}")),
                    }
                }),
            };
        }
    };
}

/// A map's entries in key order, for outputs that must not depend on iteration order.
pub fn sorted_entries<K: Ord + Clone, V: Clone>(
    m: &std::collections::HashMap<K, V>,
) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The output of a plain run as the runners compare it.
pub fn show<T: std::fmt::Debug>(r: Result<T, durable::Failure>) -> Result<String, String> {
    r.map(|v| format!("{v:?}")).map_err(|e| e.to_string())
}

// ----- the context of the plain bodies -----

/// What a plain body gets instead of `durable::Ctx`: `call` runs the activity directly.
#[derive(Clone)]
pub struct PlainCtx {
    id: Arc<str>,
    calls: Arc<AtomicU64>,
}

impl PlainCtx {
    pub fn new(id: &str) -> Self {
        Self { id: id.into(), calls: Arc::default() }
    }

    pub fn instance_id(&self) -> &str {
        &self.id
    }

    /// Runs `activity` on `input` once, as a plain async call.
    pub fn call<A: Activity>(
        &self,
        activity: impl FnOnce() -> A,
        input: A::Input,
    ) -> BoxFuture<Result<A::Ok, ActivityError<A::Err>>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let ctx = ActivityContext::detached(A::NAME, &self.id, &format!("{}:{n}", self.id));
        let fut = activity().invoke(ctx, input);
        Box::pin(async move { fut.await.map_err(ActivityError::Failed) })
    }

    /// Sleeps for `duration`, as a plain timer.
    pub fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

// ----- the activities the cases call, which record every execution -----

fn held() -> &'static Mutex<HashSet<String>> {
    static H: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    H.get_or_init(Default::default)
}

/// One execution of an activity: its idempotency key, name and input, and where it came from
/// (shown when a check fails): its attempt number and how many opens of a runtime this process
/// had begun when the attempt began (0 in process mode): a runtime's attempts share one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub key: String,
    pub call: String,
    pub attempt: u32,
    pub began_under_runtime: u64,
}

/// How many opens of a runtime [`open`] has begun in this process (tries refused as locked
/// included).
static OPENED: AtomicU64 = AtomicU64::new(0);

fn executions() -> &'static Mutex<BTreeMap<String, Vec<Execution>>> {
    static E: OnceLock<Mutex<BTreeMap<String, Vec<Execution>>>> = OnceLock::new();
    E.get_or_init(Default::default)
}

/// The file executions are appended to, when `DURABLE_DIFF_LOG` names one (process mode).
fn log_file() -> Option<&'static Mutex<std::fs::File>> {
    static F: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    F.get_or_init(|| {
        let path = std::env::var_os("DURABLE_DIFF_LOG")?;
        std::fs::OpenOptions::new().create(true).append(true).open(path).ok().map(Mutex::new)
    })
    .as_ref()
}

async fn record(ctx: &ActivityContext, call: String) {
    let began_under_runtime = OPENED.load(Ordering::SeqCst);
    while held().lock().unwrap().contains(ctx.instance_id()) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let e = Execution {
        key: ctx.idempotency_key().to_owned(),
        call,
        attempt: ctx.attempt(),
        began_under_runtime,
    };
    if let Some(f) = log_file() {
        let mut f = f.lock().unwrap();
        writeln!(f, "{}\t{}\t{}", ctx.instance_id(), e.key, e.call).unwrap();
        f.flush().unwrap();
    }
    executions().lock().unwrap().entry(ctx.instance_id().to_owned()).or_default().push(e);
}

/// The executions of run `id`, in order.
pub fn executions_of(id: &str) -> Vec<Execution> {
    executions().lock().unwrap().get(id).cloned().unwrap_or_default()
}

/// The executions of run `id` recorded in a process-mode log file, in order.
pub fn executions_in_file(path: &Path, id: &str) -> Vec<Execution> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, '\t');
            let (run, key, call) = (p.next()?, p.next()?, p.next()?);
            (run == id).then(|| Execution {
                key: key.to_owned(),
                call: call.to_owned(),
                attempt: 0,
                began_under_runtime: 0,
            })
        })
        .collect()
}

#[activity]
pub async fn dadd(ctx: ActivityContext, x: i64, y: i64) -> Result<i64, String> {
    record(&ctx, format!("dadd({x}, {y})")).await;
    Ok(x.wrapping_add(y))
}

#[activity]
pub async fn dcat(ctx: ActivityContext, a: String, b: String) -> Result<String, String> {
    record(&ctx, format!("dcat({a:?}, {b:?})")).await;
    Ok(format!("{a}{b}"))
}

/// Fails for negative numbers and multiples of 7.
#[activity]
pub async fn dcheck(ctx: ActivityContext, x: i64) -> Result<i64, String> {
    record(&ctx, format!("dcheck({x})")).await;
    if x < 0 || x % 7 == 0 { Err(format!("{x} refused")) } else { Ok(x) }
}

/// Registers the activities every case may call.
pub fn with_activities(b: RuntimeBuilder) -> RuntimeBuilder {
    b.activity(dadd).activity(dcat).activity(dcheck)
}

// ----- drop logs, for the cases about `Drop` -----

fn drop_log() -> &'static Mutex<BTreeMap<String, Vec<String>>> {
    static L: OnceLock<Mutex<BTreeMap<String, Vec<String>>>> = OnceLock::new();
    L.get_or_init(Default::default)
}

/// What was dropped so far in run `id`.
pub fn drops(id: &str) -> Vec<String> {
    drop_log().lock().unwrap().get(id).cloned().unwrap_or_default()
}

/// Logs its name under its run when dropped.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Noisy {
    pub run: String,
    pub name: String,
}

impl Noisy {
    pub fn new(run: &str, name: &str) -> Self {
        Noisy { run: run.to_owned(), name: name.to_owned() }
    }
}

impl Drop for Noisy {
    fn drop(&mut self) {
        drop_log().lock().unwrap().entry(self.run.clone()).or_default().push(self.name.clone());
    }
}

// ----- the in-process runner -----

/// A database directory under the target directory, emptied.
pub fn fresh_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().join("scratch").join("diff").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

async fn open(builder: impl Fn() -> RuntimeBuilder) -> Runtime {
    for _ in 0..500 {
        // Counted before: a runtime may resume instances before `open` returns.
        OPENED.fetch_add(1, Ordering::SeqCst);
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

/// What one case did in the plain run, which every durable run must reproduce.
#[derive(Debug, Clone)]
pub struct Reference {
    pub output: Result<String, String>,
    pub calls: Vec<String>,
}

/// Runs the plain body of `case` as run `id`.
pub async fn plain_reference(case: &Case, id: &str) -> Reference {
    let output = (case.plain)(id.to_owned()).await;
    let calls = executions_of(id).into_iter().map(|e| e.call).collect();
    Reference { output, calls }
}

/// Checks one durable run against the reference: same output, the same calls in the same
/// order, each call executed once.
pub fn compare(
    case: &Case,
    what: &str,
    reference: &Reference,
    output: &Result<String, String>,
    executed: &[Execution],
) {
    let name = case.name;
    assert_eq!(output, &reference.output, "{name}: {what}: output differs from plain Rust");
    let mut seen = HashSet::new();
    for e in executed {
        assert!(
            seen.insert(&e.key),
            "{name}: {what}: {} ({}) ran twice: {executed:#?}",
            e.call,
            e.key
        );
    }
    let calls: Vec<&String> = executed.iter().map(|e| &e.call).collect();
    let expected: Vec<&String> = reference.calls.iter().collect();
    assert_eq!(calls, expected, "{name}: {what}: activity calls differ from plain Rust");
}

/// The plain run, the uninterrupted durable run and, for cases that promise it, a run stopped
/// in process after every checkpoint. Returns the number of checkpoints of the durable run.
pub async fn check_in_process(case: &Case, tag: &str) -> u64 {
    let name = case.name;
    let reference = plain_reference(case, &format!("{tag}-{name}-plain")).await;

    let id = format!("{tag}-{name}-whole");
    let db = fresh_dir(&id);
    let rt = open(|| with_activities((case.register)(Runtime::builder(&db)))).await;
    (case.start)(rt.clone(), id.clone()).await.unwrap();
    let output = (case.wait)(rt.clone(), id.clone()).await;
    let steps = rt.status(&id).unwrap().unwrap().steps;
    rt.shutdown().await;
    drop(rt);
    compare(case, "uninterrupted", &reference, &output, &executions_of(&id));
    if !case.restarts {
        return steps;
    }

    for k in 1..steps {
        let id = format!("{tag}-{name}-stop{k}");
        let db = fresh_dir(&id);
        let reached = Arc::new(tokio::sync::Notify::new());
        let target = Arc::new(AtomicU64::new(k));
        let builder = {
            let (id, reached, target, db) =
                (id.clone(), reached.clone(), target.clone(), db.clone());
            move || {
                let (id, reached, target) = (id.clone(), reached.clone(), target.clone());
                with_activities((case.register)(Runtime::builder(&db))).on_step(
                    move |e: &StepEvent| {
                        if e.instance == id && e.step == target.load(Ordering::SeqCst) {
                            held().lock().unwrap().insert(id.clone());
                            reached.notify_one();
                        }
                    },
                )
            }
        };
        let rt = open(&builder).await;
        let notified = reached.notified();
        (case.start)(rt.clone(), id.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), notified)
            .await
            .unwrap_or_else(|_| panic!("{name}: checkpoint {k} never came"));
        rt.shutdown().await;
        drop(rt);
        target.store(u64::MAX, Ordering::SeqCst);
        held().lock().unwrap().remove(&id);
        let rt = open(&builder).await;
        let output = (case.wait)(rt.clone(), id.clone()).await;
        rt.shutdown().await;
        drop(rt);
        compare(
            case,
            &format!("stopped after checkpoint {k}"),
            &reference,
            &output,
            &executions_of(&id),
        );
        let _ = std::fs::remove_dir_all(&db);
    }
    steps
}

// ----- the process runner -----

/// The driver binary's commands (see `examples/differential.rs`):
/// `run <case> <id> <db> <abort-after>` runs instance `id` of `case` on database `db`, aborting
/// the process right after checkpoint `abort-after` (0: never), and prints `output: <Debug>` or
/// `error: <message>`, then `steps: <n>`.
pub async fn process_main(cases: &[Case], args: &[String]) -> i32 {
    let [cmd, case, id, db, abort_after] = args else {
        eprintln!("usage: differential run <case> <id> <db> <abort-after>");
        return 2;
    };
    if cmd != "run" {
        eprintln!("unknown command {cmd}");
        return 2;
    }
    let Some(case) = cases.iter().find(|c| c.name == case.as_str()) else {
        eprintln!("no case {case}");
        return 2;
    };
    let abort_after: u64 = abort_after.parse().unwrap_or(0);
    let watched = id.clone();
    let rt = open(|| {
        let watched = watched.clone();
        with_activities((case.register)(Runtime::builder(db))).on_step(move |e: &StepEvent| {
            if abort_after != 0 && e.instance == watched && e.step == abort_after {
                // A crash right after the checkpoint is durable, before its command goes out.
                std::process::abort();
            }
        })
    })
    .await;
    if let Err(e) = (case.start)(rt.clone(), id.clone()).await {
        println!("start failed: {e}");
        return 1;
    }
    match (case.wait)(rt.clone(), id.clone()).await {
        Ok(v) => println!("output: {v}"),
        Err(e) => println!("error: {e}"),
    }
    println!("steps: {}", rt.status(id).ok().flatten().map_or(0, |s| s.steps));
    rt.shutdown().await;
    0
}

/// What one driver process printed: its output line, if it got that far, and its step count.
fn run_process(exe: &Path, log: &Path, args: &[&str]) -> (Option<Result<String, String>>, u64) {
    let out = std::process::Command::new(exe)
        .args(args)
        .env("DURABLE_DIFF_LOG", log)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("spawn the differential driver");
    if out.status.code().is_some_and(|c| c != 0) {
        panic!(
            "the differential driver failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut output = None;
    let mut steps = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("output: ") {
            output = Some(Ok(v.to_owned()));
        } else if let Some(e) = line.strip_prefix("error: ") {
            output = Some(Err(e.to_owned()));
        } else if let Some(n) = line.strip_prefix("steps: ") {
            steps = n.parse().unwrap_or(0);
        }
    }
    (output, steps)
}

/// Like [`check_in_process`], with a real process killed (`abort`) right after checkpoint `k`
/// and a fresh process resuming, for every `k`. `exe` is the driver binary.
pub async fn check_with_processes(case: &Case, tag: &str, exe: &Path, dir: &Path) -> u64 {
    let name = case.name;
    let reference = plain_reference(case, &format!("{tag}-{name}-plain-for-processes")).await;
    let log = dir.join(format!("{tag}-{name}.log"));
    let _ = std::fs::remove_file(&log);
    let whole = format!("{tag}-{name}-whole");
    let db = dir.join(&whole);
    let _ = std::fs::remove_dir_all(&db);
    let (output, steps) = run_process(exe, &log, &["run", name, &whole, db.to_str().unwrap(), "0"]);
    let output =
        output.unwrap_or_else(|| panic!("{name}: the uninterrupted process printed no output"));
    compare(
        case,
        "uninterrupted (process)",
        &reference,
        &output,
        &executions_in_file(&log, &whole),
    );
    let _ = std::fs::remove_dir_all(&db);
    if !case.restarts {
        return steps;
    }
    for k in 1..steps {
        let id = format!("{tag}-{name}-abort{k}");
        let db = dir.join(&id);
        let _ = std::fs::remove_dir_all(&db);
        let db_arg = db.to_str().unwrap();
        let (first, _) = run_process(exe, &log, &["run", name, &id, db_arg, &k.to_string()]);
        assert!(
            first.is_none(),
            "{name}: the process meant to abort after {k} finished: {first:?}"
        );
        let (output, _) = run_process(exe, &log, &["run", name, &id, db_arg, "0"]);
        let output = output.unwrap_or_else(|| panic!("{name}: aborted after {k}: no output"));
        compare(
            case,
            &format!("aborted after checkpoint {k} (process)"),
            &reference,
            &output,
            &executions_in_file(&log, &id),
        );
        let _ = std::fs::remove_dir_all(&db);
    }
    steps
}
