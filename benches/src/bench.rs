//! The benchmark of issue 5 §3: durable against its targets, its physical reference (sled) and
//! duroxide (a Durable Task runtime that replays history), measured in one run; and of issue 12:
//! durable on PostgreSQL (`PgStore`) with one and several worker processes, against a bare
//! upsert, when a server is given (`DURABLE_PG` or `--pg`).
//!
//! ```text
//! cargo run --release --manifest-path benches/Cargo.toml              # the full run
//! cargo run --release --manifest-path benches/Cargo.toml -- --quick   # small sizes, 3 runs
//! cargo run --release --manifest-path benches/Cargo.toml -- --only pg --no-duroxide
//! cargo run --release --manifest-path benches/Cargo.toml -- --help
//! ```
//!
//! Each measurement that needs a fresh process (resume cost, memory) re-executes this binary as
//! a child (`durable-bench child …`) that prints one `RESULT key=value …` line.

mod durable_side;
mod duroxide_side;
mod pg_rows;
mod pg_side;
mod probe;
mod sys;
mod table;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use table::{Row, Table};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const HELP: &str = "\
durable-bench: the benchmarks of issue 5 §3 and issue 12 (PostgreSQL)

USAGE: durable-bench [OPTIONS]

OPTIONS:
  --quick              small sizes (K up to 10,000; 10,000 waiting instances), 3 runs
  --runs N             repetitions of each measurement (default 5; --quick 3)
  --only LIST          comma-separated subset of: resume,seq,fanout,wait,cpu,state,
                       pg (all PostgreSQL rows) or pg-seq,pg-workers,pg-resume
  --no-duroxide        leave out the duroxide comparison
  --duroxide-real-max K
                       build duroxide histories of up to K steps by running them
                       (default 1000); longer ones are written through its provider API
  --concurrency N      duroxide orchestration and worker dispatchers (default 2, its default)
  --dir PATH           scratch directory on the disk to measure (default benches/target/bench-data)
  --out FILE           also write the report to FILE (default benches/target/bench-report.md)
  --pg CONNINFO        the PostgreSQL server of the pg rows (libpq syntax; default $DURABLE_PG);
                       without one the pg rows are skipped, with a note
  --pg-workers LIST    worker process counts of the multi-worker row (default 1,2,4; the
                       first is the base of the scaling ratios)
  --pg-real-max K      build PostgreSQL histories of up to K steps by running them on
                       PostgreSQL (default 1000); longer ones are built on sled and their
                       record created in PostgreSQL

ENVIRONMENT:
  DURABLE_PG           the PostgreSQL server, as for the durable-postgres tests
                       (`eval \"$(.ci/postgres start --durable)\"` starts a throwaway one)
  DUROXIDE_LOGS=1      let duroxide print its log (warnings such as \"database is locked\")
";

#[derive(Debug, Clone)]
struct Config {
    ks: Vec<u64>,
    runs: usize,
    seq_steps: u64,
    fan_instances: u64,
    waiting: u64,
    plain_calls: u64,
    only: Vec<String>,
    duroxide: bool,
    duroxide_real_max: u64,
    concurrency: usize,
    dir: PathBuf,
    out: PathBuf,
    pg: Option<String>,
    pg_workers: Vec<usize>,
    pg_real_max: u64,
}

impl Config {
    fn parse(args: &[String]) -> Result<Config, String> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut c = Config {
            ks: vec![10, 1_000, 100_000],
            runs: 5,
            seq_steps: 1_000,
            fan_instances: 1_000,
            waiting: 100_000,
            plain_calls: 1_000_000,
            only: vec![],
            duroxide: true,
            duroxide_real_max: 1_000,
            concurrency: 2,
            dir: manifest.join("target/bench-data"),
            out: manifest.join("target/bench-report.md"),
            pg: std::env::var("DURABLE_PG").ok().filter(|v| !v.trim().is_empty()),
            pg_workers: vec![1, 2, 4],
            pg_real_max: 1_000,
        };
        let mut runs = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--quick" => {
                    c.ks = vec![10, 1_000, 10_000];
                    c.waiting = 10_000;
                    c.runs = 3;
                }
                "--runs" => runs = Some(value()?.parse().map_err(|e| format!("--runs: {e}"))?),
                "--only" => c.only = value()?.split(',').map(str::to_owned).collect(),
                "--no-duroxide" => c.duroxide = false,
                "--duroxide-real-max" => {
                    c.duroxide_real_max = value()?.parse().map_err(|e| format!("{a}: {e}"))?
                }
                "--concurrency" => {
                    c.concurrency = value()?.parse().map_err(|e| format!("{a}: {e}"))?
                }
                "--dir" => c.dir = PathBuf::from(value()?),
                "--out" => c.out = PathBuf::from(value()?),
                "--pg" => c.pg = Some(value()?),
                "--pg-workers" => {
                    c.pg_workers = value()?
                        .split(',')
                        .map(|w| w.parse().map_err(|e| format!("{a}: {e}")))
                        .collect::<Result<_, _>>()?;
                    if c.pg_workers.is_empty() || c.pg_workers.contains(&0) {
                        return Err(format!("{a}: worker counts of at least 1"));
                    }
                }
                "--pg-real-max" => {
                    c.pg_real_max = value()?.parse().map_err(|e| format!("{a}: {e}"))?
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if let Some(r) = runs {
            c.runs = r;
        }
        c.runs = c.runs.max(1);
        Ok(c)
    }

    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == part)
    }

    /// Whether the PostgreSQL measurement `part` (`seq`, `workers`, `resume`) is selected:
    /// by default, by `pg`, or by `pg-<part>`.
    fn wants_pg(&self, part: &str) -> bool {
        self.wants("pg") || self.only.iter().any(|o| o.strip_prefix("pg-") == Some(part))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // duroxide installs a global log subscriber printing its warnings (e.g. "database is locked,
    // backing off") to stdout unless one is set: keep the report readable.
    if std::env::var_os("DUROXIDE_LOGS").is_none() {
        let _ =
            tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    }
    if args.first().map(String::as_str) == Some("child") {
        let code = match rt.block_on(child(&args[1..])) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child {:?}: {e}", &args[1..]);
                1
            }
        };
        let _ = std::io::stdout().flush();
        // No clean-up: a child's database is a throw-away copy, and the duroxide build child
        // must end like a crash.
        std::process::exit(code);
    }
    let config = match Config::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{HELP}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    if let Err(e) = rt.block_on(parent(config)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

// ----- children -----

fn result_line(pairs: &[(&str, String)]) {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {}", body.join(" "));
}

fn us(d: Duration) -> String {
    d.as_micros().to_string()
}

async fn child(args: &[String]) -> Result<(), BoxError> {
    let arg = |i: usize| args.get(i).cloned().ok_or_else(|| format!("missing argument {i}"));
    let num = |i: usize| -> Result<u64, BoxError> { Ok(arg(i)?.parse()?) };
    match arg(0)?.as_str() {
        "durable-build" => {
            let took = durable_side::build_history(Path::new(&arg(1)?), num(2)?).await?;
            result_line(&[("build_us", us(took))]);
        }
        "durable-resume" => {
            let [opened, first, next] = durable_side::resume(Path::new(&arg(1)?), num(2)?).await?;
            result_line(&[("open_us", us(opened)), ("first_us", us(first)), ("next_us", us(next))]);
        }
        "sled-open" => {
            let took = durable_side::sled_open(Path::new(&arg(1)?))?;
            result_line(&[("open_us", us(took))]);
        }
        "duroxide-build" => {
            let lock = Duration::from_millis(num(3)?);
            let took = duroxide_side::build_history(Path::new(&arg(1)?), num(2)?, lock).await?;
            result_line(&[("build_us", us(took))]);
        }
        "duroxide-synth" => {
            let took = duroxide_side::synthesize_history(Path::new(&arg(1)?), num(2)?).await?;
            result_line(&[("build_us", us(took))]);
        }
        "duroxide-resume" => {
            let [opened, first, next] = duroxide_side::resume(Path::new(&arg(1)?), num(2)?).await?;
            result_line(&[("open_us", us(opened)), ("first_us", us(first)), ("next_us", us(next))]);
        }
        "durable-waiting" => {
            let concurrency = usize::try_from(num(3)?)?;
            let w = durable_side::waiting(Path::new(&arg(1)?), num(2)?, concurrency).await?;
            result_line(&[
                ("started_us", us(w.started_in)),
                ("rss", w.rss.to_string()),
                ("peak", w.peak.to_string()),
                ("disk_apparent", w.disk_apparent.to_string()),
                ("disk_allocated", w.disk_allocated.to_string()),
            ]);
        }
        "durable-waiting-reopen" => {
            let (opened, rss, peak) = durable_side::waiting_reopen(Path::new(&arg(1)?)).await?;
            result_line(&[
                ("open_us", us(opened)),
                ("rss", rss.to_string()),
                ("peak", peak.to_string()),
            ]);
        }
        "pg-worker" => {
            let (steps, cpu) = pg_side::worker(&arg(1)?, &arg(2)?).await?;
            result_line(&[("steps", steps.to_string()), ("cpu_us", us(cpu))]);
        }
        "pg-build" => {
            let took = pg_side::build_history(&arg(1)?, &arg(2)?, num(3)?).await?;
            result_line(&[("build_us", us(took))]);
        }
        "pg-resume" => {
            let [opened, first, next] = pg_side::resume(&arg(1)?, &arg(2)?, num(3)?).await?;
            result_line(&[("open_us", us(opened)), ("first_us", us(first)), ("next_us", us(next))]);
        }
        other => return Err(format!("unknown child `{other}`").into()),
    }
    Ok(())
}

/// Runs a child and returns its `RESULT` values, plus the wall time from spawning it to
/// reading that line.
async fn run_child(args: &[String]) -> Result<(HashMap<String, f64>, Duration), BoxError> {
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        let exe = std::env::current_exe()?;
        let t = Instant::now();
        let mut proc = Command::new(exe)
            .arg("child")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = proc.stdout.take().ok_or("no child stdout")?;
        let mut found = None;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("RESULT ") {
                let wall = t.elapsed();
                let values = rest
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k.to_owned(), v)))
                    .collect();
                found = Some((values, wall));
            }
        }
        let status = proc.wait()?;
        match found {
            Some(f) if status.success() => Ok(f),
            _ => Err(format!("child {args:?} failed: {status}").into()),
        }
    })
    .await?
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

// ----- the parent: every measurement, then the table -----

/// Per-run values of one quantity.
#[derive(Default, Debug, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }
    fn median(&self) -> f64 {
        sys::median(&self.0)
    }
    fn spread(&self) -> String {
        if self.0.is_empty() {
            return "—".into();
        }
        let (lo, hi) = sys::spread(&self.0);
        format!("{} … {}", table::num(lo), table::num(hi))
    }
}

async fn parent(c: Config) -> Result<(), BoxError> {
    std::fs::create_dir_all(&c.dir)?;
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut table = Table::default();
    let mut details: Vec<String> = Vec::new();
    let started = Instant::now();
    eprintln!("durable-bench: {} runs, scratch {}, nproc {nproc}", c.runs, c.dir.display());

    // One bar over the groups of measurements, on stderr (hidden when it is no terminal).
    let groups = ["resume", "seq", "fanout", "wait", "state", "pg"];
    let bar = indicatif::ProgressBar::new(groups.len() as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("resume after K steps");
    if c.wants("resume") {
        resume_rows(&c, &mut table, &mut details).await?;
    }
    bar.inc(1);
    bar.set_message("sequential steps");
    let mut cpu_rows = Table::default();
    if c.wants("seq") || c.wants("cpu") {
        sequential_rows(&c, &mut table, &mut cpu_rows, &mut details).await?;
    }
    bar.inc(1);
    bar.set_message("fan-out");
    if c.wants("fanout") {
        fan_out_rows(&c, &mut table, &mut details).await?;
    }
    bar.inc(1);
    bar.set_message("waiting instances");
    if c.wants("wait") {
        waiting_rows(&c, &mut table, &mut details).await?;
    }
    bar.inc(1);
    bar.set_message("state size");
    if c.wants("state") {
        state_rows(&c, &mut table, &mut details).await?;
    }
    bar.inc(1);
    bar.set_message("PostgreSQL");
    let mut pg_table = Table::default();
    if c.wants_pg("seq") || c.wants_pg("workers") || c.wants_pg("resume") {
        pg_rows::pg_rows(&c, &mut pg_table, &mut details).await?;
    }
    bar.finish_and_clear();
    table.append(cpu_rows);
    table.append(pg_table);

    let mut report = String::new();
    report.push_str(&format!(
        "durable-bench — {} — nproc {nproc} — {} runs per figure (medians) — {:.0} s\n\n",
        table::today(),
        c.runs,
        started.elapsed().as_secs_f64()
    ));
    report.push_str(&table.markdown());
    report.push_str("\nDetails (median, and min … max over the runs):\n\n");
    for d in &details {
        report.push_str(&format!("- {d}\n"));
    }
    print!("{report}");
    if let Some(parent) = c.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&c.out, &report)?;
    eprintln!("report written to {}", c.out.display());
    Ok(())
}

// ----- resume cost -----

async fn resume_rows(
    c: &Config,
    table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    let dir = c.dir.join("resume");
    sys::remove(&dir);
    std::fs::create_dir_all(&dir)?;
    let pristine_durable = |k: u64| dir.join(format!("durable-{k}.db"));
    let pristine_duroxide = |k: u64| dir.join(format!("duroxide-{k}.sqlite"));
    let lock_ms = 1_000u64;

    // Build every history once.
    for &k in &c.ks {
        let p = pristine_durable(k);
        eprintln!("resume: building durable history K={k}");
        let (r, _) = run_child(&[s("durable-build"), p.display().to_string(), s(k)]).await?;
        let (apparent, _) = sys::dir_size(&p);
        details.push(format!(
            "durable history K={k}: built in {} ms (Buffered), database {} bytes",
            table::num(r["build_us"] / 1e3),
            apparent
        ));
    }
    let mut real_built = false;
    if c.duroxide {
        for &k in &c.ks {
            let p = pristine_duroxide(k);
            let (r, how) = if k <= c.duroxide_real_max {
                eprintln!("resume: building duroxide history K={k} by running it");
                real_built = true;
                let args = [s("duroxide-build"), p.display().to_string(), s(k), s(lock_ms)];
                (run_child(&args).await?.0, "run")
            } else {
                eprintln!("resume: writing duroxide history K={k} through the provider");
                let args = [s("duroxide-synth"), p.display().to_string(), s(k)];
                (run_child(&args).await?.0, "written through the provider API")
            };
            details.push(format!(
                "duroxide history K={k}: {how} in {} ms",
                table::num(r["build_us"] / 1e3)
            ));
        }
        // The written histories must be what running produces.
        if let Some(&k) = c.ks.iter().find(|&&k| k <= c.duroxide_real_max) {
            let synth = dir.join(format!("duroxide-check-{k}.sqlite"));
            run_child(&[s("duroxide-synth"), synth.display().to_string(), s(k)]).await?;
            let real = duroxide_side::history_fingerprint(&pristine_duroxide(k)).await?;
            let written = duroxide_side::history_fingerprint(&synth).await?;
            if real != written {
                let at = real.iter().zip(&written).position(|(a, b)| a != b);
                return Err(format!(
                    "duroxide: the written history of K={k} differs from the one running built \
                     ({} vs {} events; first difference at {at:?}: {:?} vs {:?})",
                    real.len(),
                    written.len(),
                    at.and_then(|i| real.get(i)),
                    at.and_then(|i| written.get(i)),
                )
                .into());
            }
            details.push(format!(
                "duroxide: a history of K={k} written through the provider API is event for event \
                 the one running builds ({} events)",
                real.len()
            ));
            duroxide_side::remove_db(&synth);
        }
        if real_built {
            // Let the worker lock of the activity in flight at the "crash" expire.
            tokio::time::sleep(Duration::from_millis(lock_ms + 500)).await;
        }
    }

    // Resume each, `runs` times, each from a fresh copy of its pristine history.
    let mut durable_next: HashMap<u64, Samples> = HashMap::new();
    let mut durable_other: HashMap<(u64, &str), Samples> = HashMap::new();
    let mut duroxide_next: HashMap<u64, Samples> = HashMap::new();
    let mut duroxide_other: HashMap<(u64, &str), Samples> = HashMap::new();
    let mut growth = Samples::default();
    let mut growth_duroxide = Samples::default();
    let (k_lo, k_hi) = (c.ks[0], c.ks[c.ks.len() - 1]);
    // A durable resume takes milliseconds, and a millisecond is what a busy machine steals: three
    // times as many rounds as elsewhere, the first one a warm-up that is not counted. duroxide
    // takes part in the first `runs` counted rounds.
    let rounds = 3 * c.runs + 1;
    for round in 0..rounds {
        let warm_up = round == 0;
        let with_duroxide = c.duroxide && !warm_up && round <= c.runs;
        eprintln!(
            "resume: round {round}/{}{}",
            rounds - 1,
            if warm_up { " (warm-up)" } else { "" }
        );
        let mut this_run: HashMap<(u64, bool), f64> = HashMap::new();
        for &k in &c.ks {
            let copy = dir.join("run.db");
            sys::remove(&copy);
            sys::copy_dir(&pristine_durable(k), &copy)?;
            let (r, wall) =
                run_child(&[s("durable-resume"), copy.display().to_string(), s(k)]).await?;
            sys::remove(&copy);
            if warm_up {
                continue;
            }
            durable_next.entry(k).or_default().push(r["next_us"] / 1e3);
            durable_other.entry((k, "open")).or_default().push(r["open_us"] / 1e3);
            durable_other.entry((k, "first")).or_default().push(r["first_us"] / 1e3);
            durable_other.entry((k, "spawn")).or_default().push(wall.as_secs_f64() * 1e3);
            this_run.insert((k, true), r["next_us"]);
            // The storage engine's share: sled alone opening another fresh copy.
            sys::copy_dir(&pristine_durable(k), &copy)?;
            let (sled, _) = run_child(&[s("sled-open"), copy.display().to_string()]).await?;
            durable_other.entry((k, "sled")).or_default().push(sled["open_us"] / 1e3);
            durable_other
                .entry((k, "runtime"))
                .or_default()
                .push((r["next_us"] - sled["open_us"]) / 1e3);
            sys::remove(&copy);
            if with_duroxide {
                let copy = dir.join("run.sqlite");
                duroxide_side::copy_db(&pristine_duroxide(k), &copy)?;
                let (r, wall) =
                    run_child(&[s("duroxide-resume"), copy.display().to_string(), s(k)]).await?;
                duroxide_next.entry(k).or_default().push(r["next_us"] / 1e3);
                duroxide_other.entry((k, "open")).or_default().push(r["open_us"] / 1e3);
                duroxide_other.entry((k, "first")).or_default().push(r["first_us"] / 1e3);
                duroxide_other.entry((k, "spawn")).or_default().push(wall.as_secs_f64() * 1e3);
                this_run.insert((k, false), r["next_us"]);
                duroxide_side::remove_db(&copy);
            }
        }
        if warm_up {
            continue;
        }
        growth.push(this_run[&(k_hi, true)] / this_run[&(k_lo, true)]);
        if with_duroxide {
            growth_duroxide.push(this_run[&(k_hi, false)] / this_run[&(k_lo, false)]);
        }
    }

    for &k in &c.ks {
        let d = durable_next[&k].median();
        let (x, ratio) = match duroxide_next.get(&k) {
            Some(x) => (
                format!("duroxide {} ms", table::num(x.median())),
                format!("{}×", table::num(d / x.median())),
            ),
            None => ("—".into(), "—".into()),
        };
        table.push(Row::new(
            format!("Resume after K={} steps: process start → next new step", table::int(k)),
            format!("{} ms", table::num(d)),
            x,
            ratio,
            "—",
            "—",
        ));
        details.push(format!(
            "resume K={k}, durable: next new step {} ms ({}); open {} ms (sled alone opening the \
             same database: {} ms, {}; next new step minus that, per round: {} ms, {}); in-flight \
             call K+1 restarted at {} ms; parent's spawn → result line {} ms",
            table::num(d),
            durable_next[&k].spread(),
            table::num(durable_other[&(k, "open")].median()),
            table::num(durable_other[&(k, "sled")].median()),
            durable_other[&(k, "sled")].spread(),
            table::num(durable_other[&(k, "runtime")].median()),
            durable_other[&(k, "runtime")].spread(),
            table::num(durable_other[&(k, "first")].median()),
            table::num(durable_other[&(k, "spawn")].median()),
        ));
        if let Some(x) = duroxide_next.get(&k) {
            details.push(format!(
                "resume K={k}, duroxide: next new step {} ms ({}); provider + runtime start {} ms; \
                 in-flight activity K+1 restarted at {} ms; parent's spawn → result line {} ms",
                table::num(x.median()),
                x.spread(),
                table::num(duroxide_other[&(k, "open")].median()),
                table::num(duroxide_other[&(k, "first")].median()),
                table::num(duroxide_other[&(k, "spawn")].median()),
            ));
        }
    }
    let g = growth.median();
    table.push(Row::new(
        format!("Resume growth: K={} / K={} (same run)", table::int(k_hi), table::int(k_lo)),
        format!("{}×", table::num(g)),
        if c.duroxide {
            format!("duroxide {}×", table::num(growth_duroxide.median()))
        } else {
            "—".into()
        },
        "—",
        "≤ 1.2×",
        table::met(g <= 1.2),
    ));
    details.push(format!("resume growth durable {} ({})", table::num(g), growth.spread()));
    // What bounds that growth costs: the store's pauses while it snapshots by reopening.
    let n = k_hi;
    let mut worst = [Samples::default(), Samples::default()];
    let mut over = [0u64, 0];
    let mut median = [Samples::default(), Samples::default()];
    let every = [durable::store::SledStore::DEFAULT_REOPEN_EVERY, 0];
    for _ in 0..c.runs {
        for (i, e) in every.iter().enumerate() {
            let (w, o, m) = durable_side::store_pauses(&dir.join("pauses"), n, *e)?;
            worst[i].push(w.as_secs_f64() * 1e3);
            over[i] = over[i].max(o);
            median[i].push(m.as_secs_f64() * 1e6);
        }
    }
    table.push(Row::new(
        format!(
            "Worst store pause in {} record writes (reopen every {})",
            table::int(n),
            table::int(every[0])
        ),
        format!("{} ms", table::num(worst[0].median())),
        format!("never reopening: {} ms", table::num(worst[1].median())),
        "—",
        "≤ 2 ms",
        table::met(worst[0].median() <= 2.0),
    ));
    details.push(format!(
        "store pauses, {} rewrites of a 200 B record, Buffered: reopening every {}: worst {} ms ({}), \
         at most {} writes over 2 ms in a run, median write {} µs; never reopening: worst {} ms ({}), \
         at most {} over 2 ms, median {} µs",
        table::int(n),
        table::int(every[0]),
        table::num(worst[0].median()),
        worst[0].spread(),
        over[0],
        table::num(median[0].median()),
        table::num(worst[1].median()),
        worst[1].spread(),
        over[1],
        table::num(median[1].median()),
    ));
    if c.duroxide {
        details.push(format!(
            "resume growth duroxide {} ({})",
            table::num(growth_duroxide.median()),
            growth_duroxide.spread()
        ));
    }
    sys::remove(&dir);
    Ok(())
}

// ----- one instance, sequential steps; CPU per step -----

async fn sequential_rows(
    c: &Config,
    table: &mut Table,
    cpu_table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    let dir = c.dir.join("seq");
    std::fs::create_dir_all(&dir)?;
    let n = c.seq_steps;
    let cal = durable_side::calibrate(&dir.join("calibrate"), 200).await?;
    let size = cal.record;
    let [gets, puts, flushes, others] = cal.per_step;
    details.push(format!(
        "checkpoint record of the sequential loop: {size} bytes (key `seq`); store calls per step \
         (a 200-step run, start included): {} get, {} put, {} flush, {} other",
        table::num(gets),
        table::num(puts),
        table::num(flushes),
        table::num(others)
    ));
    let mut rate = Samples::default();
    let mut reference = Samples::default();
    let mut ratio = Samples::default();
    let mut reference_synced = Samples::default();
    let mut ratio_synced = Samples::default();
    let mut cpu_flush = Samples::default();
    let mut cpu_buffered = Samples::default();
    let mut cpu_plain = Samples::default();
    let mut cpu_reference = Samples::default();
    let mut rate_buffered = Samples::default();
    let mut cpu_inline = Samples::default();
    let mut rate_inline = Samples::default();
    for run in 0..c.runs {
        eprintln!("sequential: run {}/{}", run + 1, c.runs);
        let (wall, cpu) = durable_side::sequential(&dir.join("durable"), n).await?;
        let (r, r_cpu) = durable_side::sled_reference(&dir.join("sled"), b"seq", size, n, false)?;
        let (synced, _) = durable_side::sled_reference(&dir.join("sled"), b"seq", size, n, true)?;
        let steps = n as f64;
        rate.push(steps / wall.as_secs_f64());
        reference.push(steps / r.as_secs_f64());
        ratio.push(r.as_secs_f64() / wall.as_secs_f64());
        reference_synced.push(steps / synced.as_secs_f64());
        ratio_synced.push(synced.as_secs_f64() / wall.as_secs_f64());
        cpu_flush.push(cpu.as_secs_f64() * 1e6 / steps);
        cpu_reference.push(r_cpu.as_secs_f64() * 1e6 / steps);
        if c.wants("cpu") {
            let (wall, cpu) = durable_side::sequential_with(
                &dir.join("durable"),
                n,
                durable::Durability::Buffered,
                true,
            )
            .await?;
            rate_buffered.push(steps / wall.as_secs_f64());
            cpu_buffered.push(cpu.as_secs_f64() * 1e6 / steps);
            // The same without isolation: steps and attempts on the driving task.
            let (wall, cpu) = durable_side::sequential_with(
                &dir.join("durable"),
                n,
                durable::Durability::Buffered,
                false,
            )
            .await?;
            rate_inline.push(steps / wall.as_secs_f64());
            cpu_inline.push(cpu.as_secs_f64() * 1e6 / steps);
            let before = sys::cpu_time();
            let out = durable_side::plain_calls(c.plain_calls).await?;
            let cpu = sys::cpu_time().saturating_sub(before);
            std::hint::black_box(out);
            cpu_plain.push(cpu.as_secs_f64() * 1e6 / c.plain_calls as f64);
        }
    }
    if c.wants("seq") {
        let r = ratio.median();
        table.push(Row::new(
            format!("1 instance × {} sequential steps (Flush)", table::int(n)),
            format!("{} steps/s", table::int_f(rate.median())),
            format!("sled insert {size} B + flush: {}/s", table::int_f(reference.median())),
            format!("{}%", table::int_f(r * 100.0)),
            "≥ 80% of reference",
            table::met(r >= 0.8),
        ));
        let r_synced = ratio_synced.median();
        table.push(Row::new(
            "… against a power-loss-durable reference",
            format!("{} steps/s", table::int_f(rate.median())),
            format!(
                "sled insert {size} B + flush + fdatasync: {}/s",
                table::int_f(reference_synced.median())
            ),
            format!("{}%", table::int_f(r_synced * 100.0)),
            "—",
            "—",
        ));
        details.push(format!(
            "sequential: durable {} steps/s ({}); sled reference {} /s ({}); ratio {} ({}); \
             with an fdatasync per flush {} /s ({}); ratio {} ({})",
            table::int_f(rate.median()),
            rate.spread(),
            table::int_f(reference.median()),
            reference.spread(),
            table::num(r),
            ratio.spread(),
            table::int_f(reference_synced.median()),
            reference_synced.spread(),
            table::num(r_synced),
            ratio_synced.spread()
        ));
        if c.wants("cpu") {
            details.push(format!(
                "sequential, Buffered (no flush): durable {} steps/s ({})",
                table::int_f(rate_buffered.median()),
                rate_buffered.spread()
            ));
            details.push(format!(
                "sequential, Buffered, isolate_code(false): durable {} steps/s ({})",
                table::int_f(rate_inline.median()),
                rate_inline.spread()
            ));
        }
    }
    if c.wants("cpu") {
        let plain = cpu_plain.median();
        for (label, v) in [
            ("Flush", &cpu_flush),
            ("Buffered", &cpu_buffered),
            ("Buffered, isolate_code(false)", &cpu_inline),
        ] {
            let m = v.median();
            let compared = if label == "Flush" {
                format!(
                    "plain call: {} µs (sled insert + flush alone: {} µs)",
                    table::num(plain),
                    table::num(cpu_reference.median())
                )
            } else {
                format!("plain call: {} µs", table::num(plain))
            };
            cpu_table.push(Row::new(
                format!("CPU per step, sequential loop ({label})"),
                format!("{} µs", table::num(m)),
                compared,
                format!("+{} µs", table::num(m - plain)),
                "—",
                "—",
            ));
            details.push(format!("CPU per step {label}: {} µs ({})", table::num(m), v.spread()));
        }
        details.push(format!(
            "CPU per sled insert + flush of the reference: {} µs ({})",
            table::num(cpu_reference.median()),
            cpu_reference.spread()
        ));
        details.push(format!(
            "CPU per plain call of the same activity body ({} calls): {} µs ({})",
            table::int(c.plain_calls),
            table::num(plain),
            cpu_plain.spread()
        ));
    }
    sys::remove(&dir);
    Ok(())
}

// ----- state size (issue 14) -----

/// Items of 100 B in the large frame: about 100 KB of locals.
const BIG_FRAME_ITEMS: u64 = 1_000;

/// A step beside 100 KB of locals it does not modify against a step with an empty frame, and
/// the bytes a `for` over an owned `Vec` writes per iteration.
async fn state_rows(
    c: &Config,
    table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    let dir = c.dir.join("state");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("durable");
    for (durability, label, n) in [
        (durable::Durability::Flush, "Flush", 300u64),
        (durable::Durability::Buffered, "Buffered", 2_000),
    ] {
        let (mut empty, mut big, mut ratio) =
            (Samples::default(), Samples::default(), Samples::default());
        for run in 0..c.runs {
            eprintln!("state ({label}): run {}/{}", run + 1, c.runs);
            // Alternated in each run, so that both see the same machine.
            let e = durable_side::steps_beside_state(&db, n, 0, durability).await?;
            let b = durable_side::steps_beside_state(&db, n, BIG_FRAME_ITEMS, durability).await?;
            let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
            empty.push(per(e));
            big.push(per(b));
            ratio.push(b.as_secs_f64() / e.as_secs_f64());
        }
        let r = ratio.median();
        let flush = label == "Flush";
        table.push(Row::new(
            format!("Step beside 100 KB of unmodified locals ({label})"),
            format!("{} µs/step", table::num(big.median())),
            format!("empty frame: {} µs/step", table::num(empty.median())),
            format!("{}×", table::num(r)),
            if flush { "≤ 1.5×" } else { "—" },
            if flush { table::met(r <= 1.5) } else { "—" },
        ));
        details.push(format!(
            "state ({label}, {n} steps): 100 KB frame {} µs/step ({}); empty frame {} µs/step \
             ({}); ratio {} ({})",
            table::num(big.median()),
            big.spread(),
            table::num(empty.median()),
            empty.spread(),
            table::num(r),
            ratio.spread()
        ));
    }
    // What the disk alone charges for the size: sled inserting one value of each size + flush.
    let (small_ref, _) = durable_side::sled_reference(&dir.join("sled"), b"state", 200, 300, true)?;
    let (big_ref, _) =
        durable_side::sled_reference(&dir.join("sled"), b"state", 101_000, 300, true)?;
    details.push(format!(
        "state, physical reference: sled insert + flush of 200 B {} µs, of 101 KB {} µs ({}×)",
        table::num(small_ref.as_secs_f64() * 1e6 / 300.0),
        table::num(big_ref.as_secs_f64() * 1e6 / 300.0),
        table::num(big_ref.as_secs_f64() / small_ref.as_secs_f64())
    ));

    // A `for` over an owned Vec: bytes written per iteration at two lengths (flat = O(1)).
    let item_len = 8;
    let mut per_iteration = Vec::new();
    for items in [1_000u64, 10_000] {
        eprintln!("state: for over {items} items");
        let (bytes, writes) = durable_side::for_loop_bytes(&db, items, item_len).await?;
        let per = bytes as f64 / items as f64;
        details.push(format!(
            "state, `for` over a Vec of {} items of {item_len} B (Buffered): {} bytes in {} \
             record writes, {} B per iteration",
            table::int(items),
            table::int(bytes),
            table::int(writes),
            table::num(per)
        ));
        per_iteration.push(per);
    }
    let (small, large) = (per_iteration[0], per_iteration[1]);
    let growth = large / small;
    // A step that appends to a large `Vec`: the bytes of 2,000 steps less those of 1,000 (the
    // first checkpoints write the same in both), per step, beside 100 KB and 1 MB.
    let mut per_append = Vec::new();
    for base in [1_000u64, 10_000] {
        eprintln!("state: appends beside {base} items");
        let short = durable_side::append_bytes(&db, base, 1_000).await?;
        let long = durable_side::append_bytes(&db, base, 2_000).await?;
        let per = long.saturating_sub(short) as f64 / 1_000.0;
        details.push(format!(
            "state, a step appending 100 B to a Vec of {} strings of 100 B (Flush): {} bytes \
             over 1,000 steps, {} over 2,000, {} B per step past the first checkpoints",
            table::int(base),
            table::int(short),
            table::int(long),
            table::num(per)
        ));
        per_append.push(per);
    }
    table.push(Row::new(
        "Step appending 100 B to a Vec of 1 MB: bytes written per step",
        format!("{} B", table::int_f(per_append[1])),
        format!("beside 100 KB: {} B", table::int_f(per_append[0])),
        format!("{}×", table::num(per_append[1] / per_append[0])),
        "—",
        "—",
    ));
    table.push(Row::new(
        "`for` over a Vec of 10,000 items: bytes written per iteration",
        format!("{} B", table::int_f(large)),
        format!("1,000 items: {} B; item: {item_len} B + length", table::int_f(small)),
        format!("{}×", table::num(growth)),
        "flat (O(1)): ≤ 1.2×",
        table::met(growth <= 1.2),
    ));
    sys::remove(&dir);
    Ok(())
}

// ----- many instances at once -----

async fn fan_out_rows(
    c: &Config,
    table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    let dir = c.dir.join("fanout");
    std::fs::create_dir_all(&dir)?;
    let n = c.fan_instances;
    let steps = (3 * n) as f64;
    let mut durable_rate = Samples::default();
    let mut many_rate = Samples::default();
    let mut handles_rate = Samples::default();
    let mut fan_cpu = Samples::default();
    let mut fan_cores = Samples::default();
    let mut start_rates = [Samples::default(), Samples::default(), Samples::default()];
    let mut duroxide_rate = Samples::default();
    let mut ratio = Samples::default();
    let mut duroxide_failed = 0;
    for run in 0..c.runs {
        eprintln!("fan-out: run {}/{}", run + 1, c.runs);
        // Alternate which variant goes first, so that neither always runs on a cooler machine.
        let mut d = 0.0;
        for handles in if run % 2 == 0 { [false, true] } else { [true, false] } {
            let (t, cpu) = durable_side::fan_out(&dir.join("durable"), n, handles, false).await?;
            let rate = steps / t.as_secs_f64();
            if handles {
                handles_rate.push(rate);
            } else {
                d = rate;
                durable_rate.push(rate);
                fan_cpu.push(cpu.as_secs_f64() * 1e6 / steps);
                fan_cores.push(cpu.as_secs_f64() / t.as_secs_f64());
            }
        }
        let (t, _) = durable_side::fan_out(&dir.join("durable"), n, false, true).await?;
        many_rate.push(steps / t.as_secs_f64());
        for (how, rate) in [
            durable_side::Starting::OneByOne,
            durable_side::Starting::Concurrent,
            durable_side::Starting::Many,
        ]
        .into_iter()
        .zip(&mut start_rates)
        {
            let t = durable_side::starts(&dir.join("starts"), n, how).await?;
            rate.push(n as f64 / t.as_secs_f64());
        }
        if c.duroxide {
            let f = duroxide_side::fan_out(&dir.join("duroxide.sqlite"), n, c.concurrency).await?;
            // Steps of the instances that completed.
            let x = (3 * f.completed) as f64 / f.took.as_secs_f64();
            duroxide_rate.push(x);
            ratio.push(d / x);
            duroxide_failed += f.failed;
        }
    }
    let d = durable_rate.median();
    table.push(Row::new(
        format!("{} instances × 3 steps at once (Flush)", table::int(n)),
        format!("{} steps/s", table::int_f(d)),
        "—",
        "—",
        "≥ 25,000 steps/s",
        table::met(d >= 25_000.0),
    ));
    let m = many_rate.median();
    table.push(Row::new(
        format!("{} instances × 3 steps, started by one start_many", table::int(n)),
        format!("{} steps/s", table::int_f(m)),
        "—",
        "—",
        "≥ 25,000 steps/s",
        table::met(m >= 25_000.0),
    ));
    let [one, concurrent, batch] = [0, 1, 2].map(|i| start_rates[i].median());
    table.push(Row::new(
        format!("{} starts (client only): start_many / start awaited one by one", table::int(n)),
        format!("{} starts/s", table::int_f(batch)),
        format!("one by one {} starts/s", table::int_f(one)),
        format!("{}×", table::num(batch / one)),
        "—",
        "—",
    ));
    details.push(format!(
        "starts: one by one {} /s ({}); concurrent tasks {} /s ({}); start_many {} /s ({})",
        table::int_f(one),
        start_rates[0].spread(),
        table::int_f(concurrent),
        start_rates[1].spread(),
        table::int_f(batch),
        start_rates[2].spread()
    ));
    details.push(format!(
        "fan-out durable, started by one start_many: {} steps/s ({})",
        table::int_f(m),
        many_rate.spread()
    ));
    if c.duroxide {
        let r = ratio.median();
        table.push(Row::new(
            format!("{} instances × 3 steps, against duroxide", table::int(n)),
            format!("{} steps/s", table::int_f(d)),
            format!("duroxide {} steps/s", table::int_f(duroxide_rate.median())),
            format!("{}×", table::num(r)),
            "≥ 5×",
            table::met(r >= 5.0),
        ));
        details.push(format!(
            "fan-out duroxide ({} orchestration and {} worker dispatchers): {} steps/s ({}); ratio {} ({})",
            c.concurrency,
            c.concurrency,
            table::int_f(duroxide_rate.median()),
            duroxide_rate.spread(),
            table::num(r),
            ratio.spread()
        ));
        details.push(format!(
            "fan-out duroxide: {duroxide_failed} of {} instances over the runs ended Failed (an \
             infrastructure error such as \"database is locked\" after the retries of an ack); \
             the rate counts the steps of completed instances",
            n * c.runs as u64
        ));
    }
    details.push(format!(
        "fan-out durable, completions counted by the step observer: {} steps/s ({})",
        table::int_f(d),
        durable_rate.spread()
    ));
    details.push(format!(
        "fan-out durable, CPU of the process (every thread) per step, starts included: {} µs ({}); \
         cores busy on average: {} ({})",
        table::num(fan_cpu.median()),
        fan_cpu.spread(),
        table::num(fan_cores.median()),
        fan_cores.spread()
    ));
    details.push(format!(
        "fan-out durable, each instance awaited with Handle::wait: {} steps/s ({})",
        table::int_f(handles_rate.median()),
        handles_rate.spread()
    ));
    sys::remove(&dir);
    Ok(())
}

// ----- waiting instances -----

async fn waiting_rows(
    c: &Config,
    table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    let dir = c.dir.join("waiting");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("durable.db");
    let n = c.waiting;
    let mut rss = Samples::default();
    let mut peak = Samples::default();
    let mut reopen_rss = Samples::default();
    let mut reopen_peak = Samples::default();
    let mut reopen_open = Samples::default();
    let mut started = Samples::default();
    let mut disk = Samples::default();
    let mut disk_alloc = Samples::default();
    // Starting 100,000 instances takes a while: fewer repetitions than elsewhere.
    let runs = c.runs.min(3);
    for run in 0..runs {
        eprintln!("waiting: run {}/{runs} ({} instances)", run + 1, table::int(n));
        let (r, _) =
            run_child(&[s("durable-waiting"), db.display().to_string(), s(n), s(1_000)]).await?;
        rss.push(r["rss"] / 1e6);
        peak.push(r["peak"] / 1e6);
        started.push(n as f64 / (r["started_us"] / 1e6));
        disk.push(r["disk_apparent"] / n as f64);
        disk_alloc.push(r["disk_allocated"] / n as f64);
        let (r, _) = run_child(&[s("durable-waiting-reopen"), db.display().to_string()]).await?;
        reopen_rss.push(r["rss"] / 1e6);
        reopen_peak.push(r["peak"] / 1e6);
        reopen_open.push(r["open_us"] / 1e3);
        sys::remove(&db);
    }
    let m = rss.median().max(reopen_rss.median());
    table.push(Row::new(
        format!("{} instances waiting on an event: resident memory", table::int(n)),
        format!("{} MB", table::num(rss.median())),
        format!("after a restart: {} MB", table::num(reopen_rss.median())),
        "—",
        "< 100 MB",
        table::met(m < 100.0),
    ));
    table.push(Row::new(
        "… bytes on disk per waiting instance",
        format!("{} B", table::int_f(disk.median())),
        format!("allocated: {} B", table::int_f(disk_alloc.median())),
        "—",
        "—",
        "—",
    ));
    details.push(format!(
        "waiting: RSS {} MB ({}), peak {} MB ({}); started and parked {} instances/s ({})",
        table::num(rss.median()),
        rss.spread(),
        table::num(peak.median()),
        peak.spread(),
        table::int_f(started.median()),
        started.spread()
    ));
    details.push(format!(
        "waiting, after a restart (all instances looked at): RSS {} MB ({}), peak {} MB ({}), open {} ms ({})",
        table::num(reopen_rss.median()),
        reopen_rss.spread(),
        table::num(reopen_peak.median()),
        reopen_peak.spread(),
        table::num(reopen_open.median()),
        reopen_open.spread()
    ));
    details.push(format!(
        "waiting: database directory after a clean shutdown {} B per instance ({}), {} B allocated",
        table::int_f(disk.median()),
        disk.spread(),
        table::int_f(disk_alloc.median())
    ));
    sys::remove(&dir);
    Ok(())
}
