//! The same workloads on duroxide 0.1.32 (a Rust Durable Task runtime that replays history)
//! with its SQLite provider.
//!
//! Configuration: duroxide's defaults, except `dispatcher_min_poll_interval` 1 ms instead of
//! 100 ms for the resume measurement (an idle dispatcher would otherwise add up to 100 ms to a
//! resume, which is polling, not replay; faster polling did not help the throughput run), and
//! `orchestration_concurrency` / `worker_concurrency` from `--concurrency` in the throughput
//! run (default 2, duroxide's default; 1 and 4 measured no better). The SQLite provider opens the file in WAL mode; it sets
//! `PRAGMA synchronous = WAL`, which SQLite does not know and treats as NORMAL, so a commit is
//! not synced (durable against `kill -9`, not against power loss) — see the README.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::sqlite::SqliteProvider;
use duroxide::providers::{ExecutionMetadata, Provider, WorkItem};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{self, Runtime};
use duroxide::{
    ActivityContext, Client, Event, EventKind, OrchestrationContext, OrchestrationRegistry,
    RuntimeOptions,
};

use crate::probe;
use crate::sys;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The instance id of the resume measurement.
pub const RESUME_ID: &str = "resume";

fn registries() -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register_typed("Step", |_ctx: ActivityContext, (acc, i): (u64, u64)| async move {
            probe::on_step(i).await;
            Ok::<u64, String>(acc.wrapping_add(i))
        })
        .register_typed("Add", |_ctx: ActivityContext, (a, b): (u64, u64)| async move {
            Ok::<u64, String>(a.wrapping_add(b))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register_typed("Loop", |ctx: OrchestrationContext, n: u64| async move {
            let mut acc = 0u64;
            for i in 0..n {
                acc = ctx.schedule_activity_typed::<(u64, u64), u64>("Step", &(acc, i)).await?;
            }
            Ok::<u64, String>(acc)
        })
        .register_typed("Three", |ctx: OrchestrationContext, x: u64| async move {
            let a = ctx.schedule_activity_typed::<(u64, u64), u64>("Add", &(x, 1)).await?;
            let b = ctx.schedule_activity_typed::<(u64, u64), u64>("Add", &(a, 2)).await?;
            let c = ctx.schedule_activity_typed::<(u64, u64), u64>("Add", &(b, 3)).await?;
            Ok::<u64, String>(c)
        })
        .build();
    (activities, orchestrations)
}

fn options(poll: Duration, concurrency: usize, worker_lock: Option<Duration>) -> RuntimeOptions {
    let mut o = RuntimeOptions {
        dispatcher_min_poll_interval: poll,
        orchestration_concurrency: concurrency,
        worker_concurrency: concurrency,
        ..RuntimeOptions::default()
    };
    if let Some(lock) = worker_lock {
        o.worker_lock_timeout = lock;
    }
    o
}

async fn open_store(db: &Path) -> Result<Arc<SqliteProvider>, BoxError> {
    if !db.exists() {
        std::fs::File::create(db)?;
    }
    let url = format!("sqlite:{}", db.display());
    Ok(Arc::new(SqliteProvider::new(&url, None).await?))
}

/// The idle poll interval of the resume measurement: 1 ms instead of the default 100 ms, so that
/// the time measured is start-up and replay, not a dispatcher sleeping between two polls.
const RESUME_POLL: Duration = Duration::from_millis(1);

async fn start(
    store: Arc<SqliteProvider>,
    poll: Duration,
    concurrency: usize,
    worker_lock: Option<Duration>,
) -> Arc<Runtime> {
    let (activities, orchestrations) = registries();
    let options = options(poll, concurrency, worker_lock);
    runtime::Runtime::start_with_options(store, activities, orchestrations, options).await
}

/// Removes a SQLite database and its WAL files.
pub fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        sys::remove(Path::new(&format!("{}{suffix}", db.display())));
    }
}

/// Copies a SQLite database and its WAL files (no process has it open).
pub fn copy_db(from: &Path, to: &Path) -> std::io::Result<()> {
    remove_db(to);
    for suffix in ["", "-wal", "-shm"] {
        let f = format!("{}{suffix}", from.display());
        if Path::new(&f).exists() {
            std::fs::copy(&f, format!("{}{suffix}", to.display()))?;
        }
    }
    Ok(())
}

// ----- resume cost (children) -----

/// Child: runs `Loop` until its activity of index `k` is in flight (`k` steps completed),
/// then returns; the caller ends the process without shutting down, like a crash. The worker
/// lock of that activity is taken for `worker_lock`, so it expires soon after the process ends.
pub async fn build_history(db: &Path, k: u64, worker_lock: Duration) -> Result<Duration, BoxError> {
    remove_db(db);
    let t = Instant::now();
    probe::install(probe::Mode::Build { stop_at: k });
    let store = open_store(db).await?;
    let _rt = start(store.clone(), RESUME_POLL, 2, Some(worker_lock)).await;
    let client = Client::new(store);
    client.start_orchestration_typed(RESUME_ID, "Loop", k + 10).await?;
    probe::done().await;
    Ok(t.elapsed())
}

/// Child: writes, through the provider's own API, the state `build_history` would reach after
/// `k` steps — the history `OrchestrationStarted`, then `k` × (`ActivityScheduled`,
/// `ActivityCompleted`), then `ActivityScheduled` of index `k`, with that activity in the
/// worker queue — in one transaction. Building a 100,000-step history by running it would
/// replay the whole history at each of the 100,000 turns.
pub async fn synthesize_history(db: &Path, k: u64) -> Result<Duration, BoxError> {
    remove_db(db);
    let t = Instant::now();
    let store = open_store(db).await?;
    let client = Client::new(store.clone());
    client.start_orchestration_typed(RESUME_ID, "Loop", k + 10).await?;
    let (item, token, _) = store
        .fetch_orchestration_item(Duration::from_secs(60), Duration::ZERO, None)
        .await?
        .ok_or("no start item to take")?;
    let start_input = item
        .messages
        .iter()
        .find_map(|m| match m {
            WorkItem::StartOrchestration { input, .. } => Some(input.clone()),
            _ => None,
        })
        .ok_or("the start item has no input")?;
    // The registry's default version, which the runtime resolves for an unversioned start.
    let version = String::from("1.0.0");
    let ev = |id: u64, source: Option<u64>, kind: EventKind| {
        Event::with_event_id(id, RESUME_ID, 1, source, kind)
    };
    let started = ev(
        1,
        None,
        EventKind::OrchestrationStarted {
            name: "Loop".into(),
            version: version.clone(),
            input: start_input,
            parent_instance: None,
            parent_id: None,
            parent_execution_id: None,
            carry_forward_events: None,
            initial_custom_status: None,
        },
    );
    let pinned = semver::Version::parse(&started.duroxide_version).ok();
    let mut events = Vec::with_capacity(usize::try_from(2 * k + 2)?);
    events.push(started);
    let json = |v: &(u64, u64)| serde_json::to_string(v);
    let mut acc = 0u64;
    let mut id = 2;
    for i in 0..k {
        let scheduled = EventKind::ActivityScheduled {
            name: "Step".into(),
            input: json(&(acc, i))?,
            session_id: None,
            tag: None,
        };
        events.push(ev(id, None, scheduled));
        acc = acc.wrapping_add(i);
        events.push(ev(
            id + 1,
            Some(id),
            EventKind::ActivityCompleted { result: serde_json::to_string(&acc)? },
        ));
        id += 2;
    }
    let input = json(&(acc, k))?;
    events.push(ev(
        id,
        None,
        EventKind::ActivityScheduled {
            name: "Step".into(),
            input: input.clone(),
            session_id: None,
            tag: None,
        },
    ));
    let work = WorkItem::ActivityExecute {
        instance: RESUME_ID.into(),
        execution_id: 1,
        id,
        name: "Step".into(),
        input,
        session_id: None,
        tag: None,
    };
    let metadata = ExecutionMetadata {
        orchestration_name: Some("Loop".into()),
        orchestration_version: Some(version),
        pinned_duroxide_version: pinned,
        ..ExecutionMetadata::default()
    };
    store.ack_orchestration_item(&token, 1, events, vec![work], vec![], metadata, vec![]).await?;
    Ok(t.elapsed())
}

/// The history of the resume instance as comparable text: id, source id and kind of each
/// event (timestamps left out).
pub async fn history_fingerprint(db: &Path) -> Result<Vec<String>, BoxError> {
    let store = open_store(db).await?;
    let events = store.read(RESUME_ID).await?;
    Ok(events
        .iter()
        .map(|e| {
            format!("{} {:?} {:?} {}", e.event_id, e.source_event_id, e.kind, e.duroxide_version)
        })
        .collect())
}

/// Child: starts the runtime on the database and reports the times, since just before the
/// provider is opened, of: runtime started, activity K+1 started again, activity K+2 started
/// (after a replay of the whole history).
pub async fn resume(db: &Path, k: u64) -> Result<[Duration; 3], BoxError> {
    probe::install(probe::Mode::Resume { first: k });
    let store = open_store(db).await?;
    let _rt = start(store, RESUME_POLL, 2, None).await;
    let opened = probe::elapsed();
    probe::done().await;
    let (first, next) = probe::resume_times();
    Ok([opened, first, next])
}

// ----- many instances at once -----

/// What a duroxide throughput run gave.
pub struct FanOut {
    /// From the first start call to the last completion seen.
    pub took: Duration,
    pub completed: u64,
    /// Instances that ended `Failed` (e.g. "database is locked" after the retries of an ack).
    pub failed: u64,
}

/// `instances` instances of `Three` started at once: the time from the first start call until
/// the provider counts them all completed (polled every 5 ms). duroxide's default options but
/// for `concurrency` (its default is 2).
///
/// An instance whose ack failed for good ends `Failed` without its row in `instances`, which the
/// provider's counts read: when the count stops moving for a second, each instance is asked for
/// its status, and the run ends at the last progress seen once every instance is terminal.
pub async fn fan_out(db: &Path, instances: u64, concurrency: usize) -> Result<FanOut, BoxError> {
    remove_db(db);
    let store = open_store(db).await?;
    let default_poll = RuntimeOptions::default().dispatcher_min_poll_interval;
    let rt = start(store.clone(), default_poll, concurrency, None).await;
    let client = Client::new(store);
    let ids: Vec<String> = (0..instances).map(|i| format!("fan-{i:06}")).collect();
    let t = Instant::now();
    // One start after the other: starting them all concurrently made duroxide slower (more
    // "database is locked" retries, each backing off 200 ms or more).
    for (i, id) in (0u64..).zip(&ids) {
        client.start_orchestration_typed(id.clone(), "Three", i).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = (0, 0);
    let mut last_progress = t.elapsed();
    let result = loop {
        let m = client.get_system_metrics().await?;
        let seen = (m.completed_instances, m.failed_instances);
        if seen != last {
            last = seen;
            last_progress = t.elapsed();
        }
        if seen.0 + seen.1 >= instances {
            break FanOut { took: last_progress, completed: seen.0, failed: seen.1 };
        }
        if t.elapsed() > last_progress + Duration::from_secs(1) {
            let (mut completed, mut failed, mut running) = (0, 0, 0);
            for id in &ids {
                match client.get_orchestration_status(id).await? {
                    duroxide::OrchestrationStatus::Completed { .. } => completed += 1,
                    duroxide::OrchestrationStatus::Failed { .. } => failed += 1,
                    _ => running += 1,
                }
            }
            if running == 0 {
                break FanOut { took: last_progress, completed, failed };
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "duroxide fan-out did not finish in 300 s: {last:?} of {instances}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    rt.shutdown(Some(1000)).await;
    remove_db(db);
    Ok(result)
}
