//! What the examples share: the command line (`--db` or `--postgres`, `--workers`,
//! `--no-worker`, `--delay-ms`, `--effects`), opening the runtimes it asks for, and the
//! observable side effect of an activity.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use durable::{ActivityContext, Runtime, RuntimeBuilder};

/// The examples' command line.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) db: PathBuf,
    /// `--postgres URL`: the PostgreSQL store (libpq conninfo or `postgresql://` URL) instead of
    /// the sled directory `db`.
    pub(crate) postgres: Option<String>,
    /// `--workers N`: worker runtimes in this process (default 1; more need `--postgres`).
    pub(crate) workers: usize,
    /// `--no-worker`: a client-only runtime that leaves the instances to other processes.
    pub(crate) worker: bool,
    pub(crate) delay: Duration,
    pub(crate) effects: Option<PathBuf>,
    /// Further `--name value` pairs, for the example's own options.
    pub(crate) extra: Vec<(String, String)>,
}

static OPTIONS: OnceLock<Options> = OnceLock::new();

impl Options {
    /// Parses the command line; `name` picks the default database directory.
    pub(crate) fn parse(name: &str) -> Options {
        let mut db = None;
        let mut delay = Duration::ZERO;
        let mut effects = None;
        let mut extra = Vec::new();
        let mut postgres = None;
        let mut workers = 1;
        let mut worker = true;
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--no-worker" {
                worker = false;
                continue;
            }
            let Some(value) = args.next() else {
                usage(name, &format!("`{flag}` needs a value"));
            };
            match flag.as_str() {
                "--db" => db = Some(PathBuf::from(value)),
                "--delay-ms" => match value.parse() {
                    Ok(ms) => delay = Duration::from_millis(ms),
                    Err(_) => usage(name, "`--delay-ms` takes a number of milliseconds"),
                },
                "--effects" => effects = Some(PathBuf::from(value)),
                "--postgres" => postgres = Some(value),
                "--workers" => match value.parse() {
                    Ok(n) if n >= 1 => workers = n,
                    _ => usage(name, "`--workers` takes a number ≥ 1"),
                },
                other if other.starts_with("--") => extra.push((other[2..].to_owned(), value)),
                other => usage(name, &format!("unexpected argument `{other}`")),
            }
        }
        if postgres.is_none() && (workers > 1 || !worker) {
            usage(
                name,
                "`--workers` and `--no-worker` need `--postgres URL` (sled has one process)",
            );
        }
        let db = db.unwrap_or_else(|| {
            let path = std::env::temp_dir().join("durable-examples").join(format!("{name}.db"));
            if postgres.is_none() {
                println!("database: {} (pass --db DIR to choose)", path.display());
            }
            path
        });
        let options = Options { db, postgres, workers, worker, delay, effects, extra };
        let _ = OPTIONS.set(options.clone());
        options
    }

    /// Opens the runtimes the command line asks for, each configured by `configure`: one over
    /// the sled directory `--db`, or `--workers N` over the PostgreSQL database `--postgres`
    /// (each with a store, that is a connection pool, of its own), or one client-only runtime
    /// with `--no-worker`. Starts and waits go through the first.
    pub(crate) async fn open(
        &self,
        configure: impl Fn(RuntimeBuilder) -> RuntimeBuilder,
    ) -> Vec<Runtime> {
        let Some(url) = &self.postgres else {
            return vec![or_exit(configure(Runtime::builder(&self.db)).open().await)];
        };
        let mut runtimes = Vec::new();
        for _ in 0..self.workers {
            let schema = self.get("pg-schema").unwrap_or(durable_postgres::PgStore::DEFAULT_SCHEMA);
            let store = or_exit(durable_postgres::PgStore::connect_in(url, schema));
            let builder = Runtime::builder(&self.db).store(Arc::new(store)).worker(self.worker);
            let builder = match self.get("lease-ms").and_then(|v| v.parse().ok()) {
                Some(ms) => builder.lease(Duration::from_millis(ms)),
                None => builder,
            };
            runtimes.push(or_exit(configure(builder).open().await));
        }
        runtimes
    }

    /// The value of `--name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.extra.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn usage(name: &str, problem: &str) -> ! {
    eprintln!("error: {problem}");
    eprintln!(
        "usage: cargo run --example {name} -- [--db DIR | --postgres URL [--workers N] \
         [--no-worker] [--lease-ms N] [--pg-schema S]] [--delay-ms N] [--effects FILE]"
    );
    std::process::exit(2);
}

/// What every example activity does: announce itself, wait `--delay-ms`, then record its side
/// effect (`<activity> <instance> <idempotency key>`, fsynced) in `--effects`.
pub(crate) async fn side_effect(ctx: &ActivityContext) {
    let options = OPTIONS.get().cloned();
    println!(
        "running {} for {} (key {}, attempt {})",
        ctx.name(),
        ctx.instance_id(),
        ctx.idempotency_key(),
        ctx.attempt()
    );
    let Some(options) = options else { return };
    if !options.delay.is_zero() {
        tokio::time::sleep(options.delay).await;
    }
    if let Some(path) = &options.effects {
        // One record per line, ended by ` .`: a kill in the middle of the write leaves a line
        // without the end mark, which readers skip, and the leading newline keeps the next
        // record off that torn line.
        let line = format!("\n{} {} {} .", ctx.name(), ctx.instance_id(), ctx.idempotency_key());
        let written =
            std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| {
                f.write_all(line.as_bytes())?;
                f.sync_all()
            });
        if let Err(e) = written {
            eprintln!("cannot record the side effect in {}: {e}", path.display());
        }
    }
}

/// Prints one line per durable step; the crash tests read these lines.
pub(crate) fn print_step(event: &durable::StepEvent) {
    match (&event.completed, &event.outcome) {
        (Some(done), durable::StepOutcome::BranchRecorded(i)) => {
            println!("step {}: branch {i} ({done}) recorded ({})", event.step, event.instance)
        }
        (Some(done), _) => println!("step {}: {done} completed ({})", event.step, event.instance),
        (None, durable::StepOutcome::Suspended(next)) => {
            println!("step {}: started {}, calling {next}", event.step, event.instance)
        }
        (None, outcome) => println!("step {}: {outcome:?} ({})", event.step, event.instance),
    }
}

/// The value of a start-up step, or exit with its error (exit code 1).
pub(crate) fn or_exit<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Waits for the instance; prints `completed: <output>`, or `failed: <error>` and exits with 1.
pub(crate) async fn report<O>(handle: durable::Handle<O>)
where
    O: durable::Orchestration,
    <O::Output as durable::OrchestrationOutput>::Ok: std::fmt::Display,
    <O::Output as durable::OrchestrationOutput>::Err: std::fmt::Debug,
{
    match handle.wait().await {
        Ok(output) => println!("completed: {output}"),
        Err(e) => {
            println!("failed: {e}");
            std::process::exit(1);
        }
    }
}
