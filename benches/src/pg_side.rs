//! The workloads on PostgreSQL (issue 12): durable over `PgStore`, and the bare upsert it is
//! compared with, on the server `DURABLE_PG` (or `--pg`) names.
//!
//! Every measurement works in a schema of its own (`bench_…`), dropped afterwards, so a run
//! leaves the database as it found it. Workers of the multi-worker row are processes: this
//! binary re-executed as `durable-bench child pg-worker CONNINFO SCHEMA`.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable::Runtime;
use durable::store::{SledStore, Store};
use durable_postgres::PgStore;
use tokio_postgres::{Client, NoTls};

use crate::durable_side::{Calibration, calibrate_on, counted_loop, plain_loop, three_steps};
use crate::probe;
use crate::sys;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The runtime's directory argument: a `PgStore` runtime keeps nothing there.
const NO_DIR: &str = "unused-with-pg";

/// A plain connection to the server (set-up, the reference, counting finished instances).
pub async fn connect(conninfo: &str) -> Result<Client, BoxError> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The server's version and the settings a commit's durability depends on, as `name=value`.
pub async fn settings(client: &Client) -> Result<Vec<(String, String)>, BoxError> {
    let rows = client
        .query(
            "SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'fsync', \
             'synchronous_commit', 'full_page_writes', 'wal_sync_method') ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A schema name no other measurement of this run (or another run) uses.
pub fn schema_name(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("bench_{tag}_{}_{nanos:x}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub async fn drop_schema(client: &Client, schema: &str) -> Result<(), BoxError> {
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await?;
    Ok(())
}

/// A `PgStore` on `schema`, which it creates. `connect_in` blocks for its round trips: off the
/// tokio workers.
async fn store(conninfo: &str, schema: &str) -> Result<PgStore, BoxError> {
    let (conninfo, schema) = (conninfo.to_owned(), schema.to_owned());
    Ok(tokio::task::spawn_blocking(move || PgStore::connect_in(&conninfo, &schema)).await??)
}

// ----- one instance, sequential steps -----

/// One instance of `plain_loop`, `n` steps, on a worker runtime over a `PgStore` of its own
/// on a fresh `schema`: wall and CPU time (this process) from the start call to the output.
pub async fn sequential(
    conninfo: &str,
    schema: &str,
    n: u64,
) -> Result<(Duration, Duration), BoxError> {
    let rt = Runtime::builder(NO_DIR)
        .store(Arc::new(store(conninfo, schema).await?))
        .orchestration(plain_loop)
        .open()
        .await?;
    let cpu = sys::cpu_time();
    let t = Instant::now();
    let out = rt.start(plain_loop, "seq", n).await?.wait().await?;
    let wall = t.elapsed();
    let cpu = sys::cpu_time().saturating_sub(cpu);
    if out != (0..n).sum::<u64>() {
        return Err(format!("plain_loop returned {out}").into());
    }
    rt.shutdown().await;
    Ok((wall, cpu))
}

/// The reference: `n` × one `INSERT … ON CONFLICT (id) DO UPDATE` of a `value_len`-byte record
/// under one key, each its own transaction (autocommit: the statement commits before the reply),
/// prepared, over a connection made with the same conninfo, in table `reference` of `schema`.
/// Returns the wall and CPU time (this process) of the `n` upserts.
pub async fn upsert_reference(
    client: &Client,
    schema: &str,
    value_len: usize,
    n: u64,
) -> Result<(Duration, Duration), BoxError> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE \"{schema}\".reference (id bytea PRIMARY KEY, record bytea NOT NULL)"
        ))
        .await?;
    let upsert = client
        .prepare(&format!(
            "INSERT INTO \"{schema}\".reference (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = excluded.record"
        ))
        .await?;
    let key: &[u8] = b"seq";
    let mut value = vec![0u8; value_len.max(8)];
    let cpu = sys::cpu_time();
    let t = Instant::now();
    for i in 0..n {
        value[..8].copy_from_slice(&i.to_le_bytes());
        client.execute(&upsert, &[&key, &value]).await?;
    }
    let took = t.elapsed();
    Ok((took, sys::cpu_time().saturating_sub(cpu)))
}

/// `plain_loop` for `n` steps on a watched `PgStore` on `schema`: record size and store calls.
pub async fn calibrate(conninfo: &str, schema: &str, n: u64) -> Result<Calibration, BoxError> {
    calibrate_on(store(conninfo, schema).await?, Path::new(NO_DIR), n).await
}

// ----- many instances, several worker processes -----

/// Child: a worker runtime over a `PgStore` of its own on `schema`. Prints `READY` once open,
/// runs instances until its standard input closes, then shuts down and returns the steps it
/// checkpointed and the CPU time this process used meanwhile.
pub async fn worker(conninfo: &str, schema: &str) -> Result<(u64, Duration), BoxError> {
    let steps = Arc::new(AtomicU64::new(0));
    let counted = steps.clone();
    let rt = Runtime::builder(NO_DIR)
        .store(Arc::new(store(conninfo, schema).await?))
        .orchestration(three_steps)
        .on_step(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .open()
        .await?;
    let cpu = sys::cpu_time();
    println!("READY");
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await??;
    let cpu = sys::cpu_time().saturating_sub(cpu);
    rt.shutdown().await;
    Ok((steps.load(Ordering::SeqCst), cpu))
}

/// A worker process, open and ready.
struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl WorkerProcess {
    /// Starts `durable-bench child pg-worker CONNINFO SCHEMA` and waits for its `READY`.
    fn spawn(conninfo: &str, schema: &str) -> Result<WorkerProcess, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["child", "pg-worker", conninfo, schema])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no worker stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "READY" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("worker did not start: {line:?}").into());
        }
        Ok(WorkerProcess { child, stdin, stdout })
    }

    /// Closes its input (it shuts down) and reads its result: (steps, CPU µs).
    fn finish(mut self) -> Result<(u64, f64), BoxError> {
        drop(self.stdin.take());
        let mut found = None;
        for line in (&mut self.stdout).lines() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("RESULT ") {
                let value = |key: &str| {
                    rest.split_whitespace()
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == key)
                        .and_then(|(_, v)| v.parse::<f64>().ok())
                };
                found = value("steps").zip(value("cpu_us"));
            }
        }
        let status = self.child.wait()?;
        match found {
            Some((steps, cpu)) if status.success() => Ok((steps as u64, cpu)),
            _ => Err(format!("worker failed: {status}").into()),
        }
    }
}

/// What [`fan_out`] measured.
pub struct FanOut {
    pub took: Duration,
    /// Steps each worker process checkpointed.
    pub steps: Vec<u64>,
    /// CPU time of all worker processes together, in µs.
    pub worker_cpu_us: f64,
}

/// `instances` instances of `three_steps` on a fresh `schema`, run by `workers` worker
/// processes (each a runtime over its own `PgStore`, so its own pool), started from this
/// process by a client-only runtime (`worker(false)`, its own `PgStore`), 64 start calls in
/// flight: the time from the first start call until the database holds `instances` finished
/// instances (counted every 2 ms on a connection of its own).
pub async fn fan_out(
    conninfo: &str,
    schema: &str,
    instances: u64,
    workers: usize,
) -> Result<FanOut, BoxError> {
    let client_store = store(conninfo, schema).await?;
    let spawned = {
        let (conninfo, schema) = (conninfo.to_owned(), schema.to_owned());
        tokio::task::spawn_blocking(move || {
            (0..workers).map(|_| WorkerProcess::spawn(&conninfo, &schema)).collect::<Vec<_>>()
        })
        .await?
    };
    let mut procs = Vec::new();
    let mut failed = None;
    for p in spawned {
        match p {
            Ok(p) => procs.push(p),
            Err(e) => failed = Some(e),
        }
    }
    let measured = async {
        if let Some(e) = failed {
            return Err(e);
        }
        let rt =
            Runtime::builder(NO_DIR).store(Arc::new(client_store)).worker(false).open().await?;
        let counter = connect(conninfo).await?;
        let count = counter
            .prepare(&format!("SELECT count(*) FROM \"{schema}\".instances WHERE finished"))
            .await?;
        let t = Instant::now();
        let permits = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..instances {
            let permit = permits.clone().acquire_owned().await?;
            let rt = rt.clone();
            tasks.spawn(async move {
                let r = rt.start(three_steps, format!("fan-{i:06}"), i).await;
                drop(permit);
                r.map(|_| ())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let deadline = t + Duration::from_secs(300);
        loop {
            let done: i64 = counter.query_one(&count, &[]).await?.get(0);
            if u64::try_from(done)? >= instances {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{done} of {instances} instances finished in 300 s").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = t.elapsed();
        rt.shutdown().await;
        Ok(took)
    }
    .await;
    let finished = tokio::task::spawn_blocking(move || {
        procs.into_iter().map(WorkerProcess::finish).collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let took = measured?;
    let finished = finished?;
    Ok(FanOut {
        took,
        steps: finished.iter().map(|(s, _)| *s).collect(),
        worker_cpu_us: finished.iter().map(|(_, c)| c).sum(),
    })
}

// ----- resume -----

/// Child: builds the history of `counted_loop` with `k` completed steps and call K+1 in flight
/// on `schema`, running it on a runtime over `PgStore` (every step committed), then shuts down.
pub async fn build_history(conninfo: &str, schema: &str, k: u64) -> Result<Duration, BoxError> {
    let t = Instant::now();
    probe::install(probe::Mode::Build { stop_at: k });
    let rt = Runtime::builder(NO_DIR)
        .store(Arc::new(store(conninfo, schema).await?))
        .orchestration(counted_loop)
        .open()
        .await?;
    let _handle = rt.start(counted_loop, "resume", k + 10).await?;
    probe::done().await;
    rt.shutdown().await;
    Ok(t.elapsed())
}

/// Copies the instance `resume` of a sled history (built by `durable_side::build_history`)
/// into `schema` through the `Store` trait: the same record bytes, created at version 1, with
/// no lease. Returns the record's size.
pub async fn copy_from_sled(
    sled_db: &Path,
    conninfo: &str,
    schema: &str,
) -> Result<usize, BoxError> {
    let sled = SledStore::open(sled_db)?;
    let record = sled.read("resume")?.ok_or("no instance `resume` in the sled history")?.record;
    if !sled.inbox("resume")?.is_empty() {
        return Err("the sled history has messages in its inbox".into());
    }
    drop(sled);
    let pg = store(conninfo, schema).await?;
    let len = record.len();
    tokio::task::spawn_blocking(move || pg.create("resume", &record)).await??;
    Ok(len)
}

/// The record of instance `resume` in `schema`.
pub async fn record(client: &Client, schema: &str) -> Result<Vec<u8>, BoxError> {
    let row = client
        .query_one(
            &format!("SELECT record FROM \"{schema}\".instances WHERE id = $1"),
            &[&b"resume".as_slice()],
        )
        .await?;
    Ok(row.get(0))
}

/// A fresh schema `to` holding the instances (records, versions, inboxes) of `from`, without
/// their leases: as after a worker shut down or its lease ran out.
pub async fn clone_history(
    conninfo: &str,
    client: &Client,
    from: &str,
    to: &str,
) -> Result<(), BoxError> {
    drop(store(conninfo, to).await?);
    client
        .batch_execute(&format!(
            "INSERT INTO \"{to}\".instances (id, record, version, finished)
                 SELECT id, record, version, finished FROM \"{from}\".instances;
             INSERT INTO \"{to}\".inbox (seq, id, body) SELECT seq, id, body FROM \"{from}\".inbox;
             INSERT INTO \"{to}\".kv (space, key, value) SELECT space, key, value FROM \"{from}\".kv"
        ))
        .await?;
    Ok(())
}

/// Child: connects a `PgStore` to `schema` and opens a worker runtime over it (default
/// durability); the times, since just before the connect, of: `open` returned, call K+1
/// started again, call K+2 started (after step K+1 was committed).
pub async fn resume(conninfo: &str, schema: &str, k: u64) -> Result<[Duration; 3], BoxError> {
    probe::install(probe::Mode::Resume { first: k });
    let rt = Runtime::builder(NO_DIR)
        .store(Arc::new(store(conninfo, schema).await?))
        .orchestration(counted_loop)
        .open()
        .await?;
    let opened = probe::elapsed();
    probe::done().await;
    let (first, next) = probe::resume_times();
    drop(rt);
    Ok([opened, first, next])
}
