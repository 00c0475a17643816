//! The crash-torture driver, shared by `tests/torture.rs` (CI size) and
//! `examples/torture_driver.rs` (long mode). Self-contained (std only) so that both can include
//! it with `#[path]`.
//!
//! The run is cut into epochs. An epoch starts the worker (`examples/torture.rs`) on a fresh
//! database, SIGKILLs it after a random delay, restarts it, again and again; every restart
//! starts a few more instances, so the kills land among instances at every stage. Then it lets
//! the worker finish and compares everything it printed and recorded with a reference run (fresh
//! database, no kill) of the same instances:
//!
//! - every instance (children too) finished, completed, with the reference's output and the
//!   reference's number of checkpoints;
//! - a checkpoint line (`checkpoint <instance> <step>`, printed after the step is durable) never
//!   appears twice: no checkpointed step executed again;
//! - an activity (`running … (key K …)`) never starts after the checkpoint that consumed its
//!   result (step N+1 for key `<instance>:N[.branch]`) was printed, never twice in one process,
//!   and starts again in a later process only if a kill landed while it was in flight: started
//!   in the killed process, result not checkpointed there;
//! - every effect the reference recorded was recorded, and nothing else; an effect is only
//!   recorded by a process that started that activity, at most once per process; so an effect
//!   recorded more than once comes from an activity that a kill caught in flight.
//!
//! A join branch whose result is stored on its own (before the join's step) is announced by a
//! `branch` line; from then on it counts as done, exactly like a checkpointed step.
//!
//! On PostgreSQL (`Config::postgres`) an epoch runs several worker processes side by side on a
//! fresh schema, all starting and waiting for the same instances, one of them feeding the
//! events; any of them is killed and started again, and the ones running at the end finish.
//! The driver orders the lines of all processes by the time it read them, and the checks read
//! across processes: a checkpoint line appears once among all of them; an activity starts again
//! only after a kill caught an earlier start (in another process) in flight, that is before any
//! process made its result durable; each process has an effects file of its own; every process
//! that ran to the end saw every instance completed with the reference's output.

#![allow(dead_code, unreachable_pub)]

#[path = "built.rs"]
mod built;
#[path = "effects.rs"]
mod effects;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kills in total.
    pub kills: usize,
    /// Kills per epoch (one database, one comparison).
    pub kills_per_epoch: usize,
    /// Seeds the kill delays.
    pub seed: u64,
    /// Instances started by the first process of an epoch.
    pub first_instances: usize,
    /// Instances added by every further process.
    pub per_round: usize,
    /// Kill delays are uniform in `0..=max_kill_delay_ms` after the spawn.
    pub max_kill_delay_ms: u64,
    /// `--delay-ms` of the worker's activities.
    pub activity_delay_ms: u64,
    /// How long the last, unkilled run of an epoch may take before its instances count as stuck.
    pub finish_timeout: Duration,
    /// Scratch directory (emptied first).
    pub dir: PathBuf,
    /// The worker binary.
    pub worker: PathBuf,
    /// Further worker arguments for the torture runs (not the reference runs).
    pub worker_args: Vec<String>,
    /// Draw a progress bar over the kills (on a terminal; the long mode's driver sets it).
    pub progress: bool,
    /// `Some(conninfo)`: several worker processes share one PostgreSQL database (a fresh schema
    /// per epoch) instead of one process on a sled directory.
    pub postgres: Option<String>,
    /// Worker processes running at once on PostgreSQL.
    pub processes: usize,
    /// Their `--lease-ms`: well above an activity's duration (and a stall of a busy machine),
    /// so that an instance changes hands only after a kill.
    pub lease_ms: u64,
    /// Lines on a worker's stderr that count as known findings (reported in the summary) rather
    /// than violations: a line containing one of these. Empty (the default): anything on stderr
    /// is a violation.
    pub known_findings: Vec<&'static str>,
}

impl Config {
    /// The defaults for `kills` kills.
    pub fn new(kills: usize, seed: u64, dir: PathBuf, worker: PathBuf) -> Config {
        Config {
            kills,
            kills_per_epoch: 25,
            seed,
            first_instances: 20,
            per_round: 20,
            max_kill_delay_ms: 300,
            activity_delay_ms: 10,
            finish_timeout: Duration::from_secs(90),
            dir,
            worker,
            worker_args: Vec::new(),
            progress: false,
            postgres: None,
            processes: 1,
            lease_ms: 5000,
            known_findings: Vec::new(),
        }
    }

    /// The defaults for `kills` kills of `processes` worker processes on the PostgreSQL database
    /// `conninfo`: every epoch runs a fixed number of instances (all processes start and wait
    /// for the same ones), and a kill lands every 0–300 ms on one of the processes.
    pub fn postgres(
        kills: usize,
        seed: u64,
        dir: PathBuf,
        worker: PathBuf,
        conninfo: String,
        processes: usize,
    ) -> Config {
        Config {
            kills_per_epoch: 10,
            first_instances: 40,
            per_round: 0,
            postgres: Some(conninfo),
            processes: processes.max(1),
            ..Config::new(kills, seed, dir, worker)
        }
    }
}

/// What a torture run found.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub kills: usize,
    pub epochs: usize,
    /// Worker processes started (killed ones, ones that ran to the end, the last of each epoch).
    pub processes: usize,
    /// Kills that landed before the worker had opened its database.
    pub kills_before_open: usize,
    /// Top-level instances, and all instances with sub-orchestrations.
    pub instances: usize,
    pub all_instances: usize,
    /// Checkpoints in the final state (sum of steps).
    pub checkpoints: u64,
    /// Effect records (activity runs that got as far as their effect).
    pub activity_runs: usize,
    /// Distinct activity calls.
    pub keys: usize,
    /// (kill, activity) pairs where the activity was in flight at the kill.
    pub in_flight: usize,
    /// Effect records beyond the first of each call.
    pub duplicates: usize,
    /// How many calls recorded their effect n times.
    pub distribution: BTreeMap<usize, usize>,
    pub violations: Vec<String>,
    /// Stderr lines of [`Config::known_findings`], by run: reported, not violations.
    pub findings: Vec<String>,
    /// The substrings of [`Config::known_findings`].
    pub known: Vec<&'static str>,
    pub elapsed: Duration,
}

impl Summary {
    /// The one summary line.
    pub fn line(&self) -> String {
        let dist: Vec<String> =
            self.distribution.iter().map(|(n, k)| format!("{n}x:{k}")).collect();
        format!(
            "torture: kills={} (before open {}) instances={} (with children {}) activity_runs={} calls={} \
             in_flight_at_kill={} duplicates={} distribution=[{}] checkpoints={} \
             processes={} epochs={} violations={} known_findings={} seed={:#x} time={:.0}s",
            self.kills,
            self.kills_before_open,
            self.instances,
            self.all_instances,
            self.activity_runs,
            self.keys,
            self.in_flight,
            self.duplicates,
            dist.join(" "),
            self.checkpoints,
            self.processes,
            self.epochs,
            self.violations.len(),
            self.findings.len(),
            self.seed,
            self.elapsed.as_secs_f64()
        )
    }
}

/// A seed from the clock, for runs that were not given one.
pub fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    splitmix(&mut (u64::try_from(t % (1 << 64)).unwrap_or(0) ^ u64::from(std::process::id())))
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The worker example, built for the running executable's profile first.
pub fn worker() -> PathBuf {
    built::example("torture")
}

pub use built::scratch;

// ----- running the worker -----

struct Worker {
    child: Child,
    out: JoinHandle<Vec<(u64, String)>>,
    err: JoinHandle<Vec<(u64, String)>>,
    /// Set when the worker printed `opened` (its database is open, its instances resumed).
    opened: Arc<AtomicBool>,
}

/// One worker process, after it ended.
#[derive(Debug, Default)]
struct Run {
    /// SIGKILLed by the driver while it ran.
    killed: bool,
    /// Did not finish within the timeout (then killed).
    timed_out: bool,
    status: String,
    success: bool,
    out: Vec<String>,
    /// When the driver read each line of `out` (µs since the torture began): the order of the
    /// lines of processes that run side by side.
    at: Vec<u64>,
    /// When the kill was sent (µs), `u64::MAX` when not killed. Every line of the run was
    /// printed before.
    killed_at: u64,
    /// Ran to the end of its epoch (not killed): its `completed:` and `final` lines are
    /// compared with the reference.
    last: bool,
    /// Its worker slot (PostgreSQL: which of the processes running side by side).
    slot: usize,
    err: Vec<String>,
    /// Effect records this process appended: `activity instance key`.
    effects: Vec<String>,
    /// How long after the spawn (or after `opened`) the kill was sent.
    delay_ms: u64,
    after_open: bool,
}

/// Keeps what a run printed and recorded in `<epoch dir>/run-<r>.log`, for the report.
fn keep_log(dir: &Path, r: usize, run: &Run) {
    let mut text = format!(
        "# run {r} (slot {}): killed {} {} ms after {}, status {}; lines prefixed with the \
         driver's clock (ms) when read\n",
        run.slot,
        run.killed,
        run.delay_ms,
        if run.after_open { "`opened`" } else { "the spawn" },
        run.status
    );
    for (i, l) in run.out.iter().enumerate() {
        let ms = run.at.get(i).map_or(0, |us| us / 1000);
        text.push_str(&format!("{ms} {l}\n"));
    }
    for l in &run.err {
        text.push_str("stderr: ");
        text.push_str(l);
        text.push('\n');
    }
    for l in &run.effects {
        text.push_str("effect: ");
        text.push_str(l);
        text.push('\n');
    }
    let _ = std::fs::write(dir.join(format!("run-{r}.log")), text);
}

/// Microseconds since the first call: the driver's clock for ordering the lines of processes.
fn now_us() -> u64 {
    static BEGAN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let began = *BEGAN.get_or_init(Instant::now);
    u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    opened: Arc<AtomicBool>,
) -> JoinHandle<Vec<(u64, String)>> {
    now_us();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line == "opened" {
                opened.store(true, Ordering::SeqCst);
            }
            lines.push((now_us(), line));
        }
        lines
    })
}

impl Worker {
    fn spawn(exe: &Path, args: &[String]) -> Worker {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the torture worker");
        let opened = Arc::new(AtomicBool::new(false));
        let out = collect(child.stdout.take().expect("piped stdout"), opened.clone());
        let err = collect(child.stderr.take().expect("piped stderr"), Arc::default());
        Worker { child, out, err, opened }
    }

    /// Waits until the worker has opened its database; `false` if it exited or took longer
    /// than `timeout`.
    fn wait_opened(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.opened.load(Ordering::SeqCst) {
            if Instant::now() > deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    fn end(self, status: Option<ExitStatus>, timed_out: bool, killed_at: u64) -> Run {
        let (at, out) = self.out.join().unwrap_or_default().into_iter().unzip();
        let err: Vec<String> =
            self.err.join().unwrap_or_default().into_iter().map(|(_, l)| l).collect();
        let killed = status.and_then(|s| s.signal()) == Some(9) && !timed_out;
        Run {
            killed,
            timed_out,
            status: status.map_or("unknown".into(), |s| s.to_string()),
            success: status.is_some_and(|s| s.success()),
            out,
            at,
            err,
            killed_at: if killed { killed_at } else { u64::MAX },
            last: !killed,
            ..Run::default()
        }
    }

    /// Whether it exited by itself (then it is ended with [`Worker::finish`]).
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL (unless it has already exited), then everything it printed.
    fn kill(mut self) -> Run {
        let killed_at = now_us();
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.end(status, false, killed_at)
    }

    /// Waits for the exit; after `timeout`, SIGKILL and report a timeout.
    fn finish(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return self.end(Some(status), false, u64::MAX);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let status = self.child.wait().ok();
                return self.end(status, true, u64::MAX);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads the effect records appended since `seen` lines (a line a kill cut short is no record).
fn new_effects(path: &Path, seen: &mut usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let new = lines
        .get(*seen..)
        .unwrap_or_default()
        .iter()
        .filter_map(|l| effects::effect_record(l).map(str::to_owned))
        .collect();
    *seen = lines.len();
    new
}

fn args(db: &Path, effects: &Path, instances: usize, delay_ms: u64) -> Vec<String> {
    vec![
        "--db".into(),
        db.display().to_string(),
        "--effects".into(),
        effects.display().to_string(),
        "--delay-ms".into(),
        delay_ms.to_string(),
        "--instances".into(),
        instances.to_string(),
    ]
}

// ----- reading what the worker printed -----

struct Start {
    run: usize,
    line: usize,
    instance: String,
    /// The checkpoint that consumes this call's result.
    consumed_by: u64,
    /// Its branch in a join (0 otherwise).
    branch: usize,
}

/// `running <activity> for <instance> (key <key>, attempt <n>)` → (effect record, instance,
/// step of the call).
fn parse_start(line: &str) -> Option<(String, String, u64, usize)> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() != 8 || t[0] != "running" || t[2] != "for" || t[4] != "(key" {
        return None;
    }
    let key = t[5].trim_end_matches(',');
    let rest = key.strip_prefix(t[3])?.strip_prefix(':')?;
    let mut parts = rest.split('.');
    let step = parts.next()?.parse().ok()?;
    let branch = match parts.next() {
        Some(b) => b.parse().ok()?,
        None => 0,
    };
    Some((format!("{} {} {key}", t[1], t[3]), t[3].to_owned(), step, branch))
}

/// `branch <instance> <step> <n>`: branch `n` of the join issued at `step` has its result stored.
fn parse_branch(line: &str) -> Option<(String, u64, usize)> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() != 4 || t[0] != "branch" {
        return None;
    }
    Some((t[1].to_owned(), t[2].parse().ok()?, t[3].parse().ok()?))
}

/// `checkpoint <instance> <step> <outcome>`.
fn parse_checkpoint(line: &str) -> Option<(String, u64, String)> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() != 4 || t[0] != "checkpoint" {
        return None;
    }
    Some((t[1].to_owned(), t[2].parse().ok()?, t[3].to_owned()))
}

/// The lines starting with `prefix`, split into id and the rest.
fn tagged(lines: &[String], prefix: &str) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|r| r.split_once(' '))
        .map(|(id, rest)| (id.to_owned(), rest.to_owned()))
        .collect()
}

/// What a run without kills produced.
struct Reference {
    outputs: BTreeMap<String, String>,
    finals: BTreeMap<String, String>,
    effects: BTreeSet<String>,
}

fn reference(cfg: &Config, instances: usize, violations: &mut Vec<String>) -> Reference {
    let dir = cfg.dir.join(format!("reference-{instances}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create reference dir");
    let fx = dir.join("effects");
    let a = args(&dir.join("db"), &fx, instances, cfg.activity_delay_ms);
    let run = Worker::spawn(&cfg.worker, &a).finish(cfg.finish_timeout);
    let mut bad = |what: String| violations.push(format!("reference run ({instances}): {what}"));
    if !run.success || !run.out.iter().any(|l| l == "all done") || !run.err.is_empty() {
        bad(format!("did not finish cleanly: {}; {}", run.status, tail(&run)));
    }
    let mut effects = BTreeSet::new();
    for e in new_effects(&fx, &mut 0) {
        if !effects.insert(e.clone()) {
            bad(format!("effect recorded twice without any kill: {e}"));
        }
    }
    let mut seen = BTreeSet::new();
    for (instance, step, _) in run.out.iter().filter_map(|l| parse_checkpoint(l)) {
        if !seen.insert((instance.clone(), step)) {
            bad(format!("checkpoint {instance} {step} printed twice"));
        }
    }
    Reference {
        outputs: tagged(&run.out, "completed: "),
        finals: tagged(&run.out, "final "),
        effects,
    }
}

fn tail(run: &Run) -> String {
    let out: Vec<&String> =
        run.out.iter().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
    format!("stdout tail {out:?}, stderr {:?}", run.err.iter().take(20).collect::<Vec<_>>())
}

// ----- the torture -----

/// A bar over `len` steps when `visible` (indicatif hides it when stderr is no terminal).
pub fn progress_bar(visible: bool, len: usize, what: &str) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} (eta {{eta}})"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Prints `line` above the bar, or plainly when there is none.
pub fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() { println!("{line}") } else { bar.println(line) }
}

/// Runs the torture; the caller prints [`Summary::line`] and fails on violations.
pub fn run(cfg: &Config) -> Summary {
    let began = Instant::now();
    let _ = std::fs::remove_dir_all(&cfg.dir);
    std::fs::create_dir_all(&cfg.dir).expect("create torture dir");
    let mut rng = cfg.seed;
    let mut summary =
        Summary { seed: cfg.seed, known: cfg.known_findings.clone(), ..Summary::default() };
    let mut references: HashMap<usize, Reference> = HashMap::new();
    let mut epoch = 0;
    let bar = progress_bar(cfg.progress, cfg.kills, "kills");
    while summary.kills < cfg.kills {
        let want = cfg.kills_per_epoch.min(cfg.kills - summary.kills);
        let dir = cfg.dir.join(format!("epoch-{epoch}"));
        std::fs::create_dir_all(&dir).expect("create epoch dir");
        let mut epoch_run = Epoch {
            epoch,
            dir: &dir,
            want,
            rng: &mut rng,
            bar: &bar,
            kills: 0,
            kills_before_open: 0,
            violations: Vec::new(),
        };
        let (runs, instances) = match &cfg.postgres {
            Some(url) => epoch_run.processes(cfg, url),
            None => epoch_run.sled(cfg),
        };
        let kills = epoch_run.kills;
        summary.kills += kills;
        summary.kills_before_open += epoch_run.kills_before_open;
        summary.violations.append(&mut epoch_run.violations);
        summary.processes += runs.len();
        summary.epochs += 1;
        // The reference is a sled run without kills: outputs and step counts are functions of
        // the inputs only, whatever the store and however many processes.
        let reference = references
            .entry(instances)
            .or_insert_with(|| reference(cfg, instances, &mut summary.violations));
        let before = summary.violations.len();
        check_epoch(epoch, &runs, reference, &mut summary);
        summary.instances += instances;
        say(
            &bar,
            format!(
                "epoch {epoch}: {kills} kills, {} processes, {instances} instances, {} new \
                 violations",
                runs.len(),
                summary.violations.len() - before
            ),
        );
        if kills == 0 {
            summary.violations.push(format!(
                "epoch {epoch}: no kill landed in {} processes (the worker finished too fast)",
                runs.len()
            ));
            break;
        }
        epoch += 1;
    }
    summary.elapsed = began.elapsed();
    summary
}

/// One epoch in the making: its kills and the problems met while driving it.
struct Epoch<'a> {
    epoch: usize,
    dir: &'a Path,
    /// Kills to land.
    want: usize,
    rng: &'a mut u64,
    bar: &'a indicatif::ProgressBar,
    kills: usize,
    kills_before_open: usize,
    violations: Vec<String>,
}

impl Epoch<'_> {
    /// Bookkeeping of a run that ended: its log, and the kill if it was one.
    fn ended(&mut self, r: usize, run: &Run, open_failed: bool) {
        if open_failed {
            self.violations.push(format!(
                "epoch {} run {r}: did not open its database within 30 s; {}",
                self.epoch,
                tail(run)
            ));
        }
        keep_log(self.dir, r, run);
        if run.killed {
            self.kills += 1;
            self.bar.inc(1);
            if !run.out.iter().any(|l| l == "opened") {
                self.kills_before_open += 1;
            }
        }
    }

    /// One worker process on a sled directory, killed and restarted; every restart starts a few
    /// more instances, so the kills land among instances at every stage. Returns the runs and
    /// the number of instances.
    fn sled(&mut self, cfg: &Config) -> (Vec<Run>, usize) {
        let (db, fx) = (self.dir.join("db"), self.dir.join("effects"));
        let worker_args = |instances: usize| {
            let mut a = args(&db, &fx, instances, cfg.activity_delay_ms);
            a.extend(cfg.worker_args.iter().cloned());
            a
        };
        let mut runs = Vec::new();
        let mut seen_effects = 0;
        let mut instances = cfg.first_instances;
        while self.kills < self.want && runs.len() < 4 * self.want {
            // One kill in eight lands at any moment of the start-up (opening the database,
            // recovering sled's log, resuming); the others after the worker has opened it.
            let during_start = splitmix(self.rng).is_multiple_of(8);
            let delay = splitmix(self.rng) % (cfg.max_kill_delay_ms + 1);
            let mut worker = Worker::spawn(&cfg.worker, &worker_args(instances));
            let mut open_failed = false;
            if !during_start {
                open_failed = !worker.wait_opened(Duration::from_secs(30));
            }
            std::thread::sleep(Duration::from_millis(delay));
            let mut run = worker.kill();
            run.effects = new_effects(&fx, &mut seen_effects);
            run.delay_ms = delay;
            run.after_open = !during_start;
            // Finished before the kill, or not: it ran fewer instances than the last run.
            run.last = false;
            self.ended(runs.len(), &run, open_failed);
            runs.push(run);
            instances += cfg.per_round;
        }
        let mut last =
            Worker::spawn(&cfg.worker, &worker_args(instances)).finish(cfg.finish_timeout);
        last.effects = new_effects(&fx, &mut seen_effects);
        self.ended(runs.len(), &last, false);
        runs.push(last);
        (runs, instances)
    }

    /// `cfg.processes` worker processes on one fresh PostgreSQL schema, all starting and waiting
    /// for the same instances; exactly one (slot 0, restarted with it) raises the events. Every
    /// 0–`max_kill_delay_ms` ms one of them, drawn at random, is SIGKILLed (one kill in eight
    /// whether or not it has opened its runtime yet) and started again in its slot. Then the
    /// ones running finish. Returns the runs and the number of instances.
    fn processes(&mut self, cfg: &Config, url: &str) -> (Vec<Run>, usize) {
        let instances = cfg.first_instances;
        let schema = format!("torture_{}_{:x}_{}", std::process::id(), cfg.seed >> 40, self.epoch);
        let dir = self.dir.to_owned();
        let worker_args = |run: usize, slot: usize| {
            let mut a = args(
                Path::new("unused"),
                &dir.join(format!("effects-{run}")),
                instances,
                cfg.activity_delay_ms,
            );
            a.drain(..2);
            a.extend(
                [
                    "--postgres",
                    url,
                    "--pg-schema",
                    &schema,
                    "--lease-ms",
                    &cfg.lease_ms.to_string(),
                    "--feed",
                    if slot == 0 { "yes" } else { "no" },
                ]
                .map(str::to_owned),
            );
            a.extend(cfg.worker_args.iter().cloned());
            a
        };
        let mut runs: Vec<Option<Run>> = Vec::new();
        let spawn = |runs: &mut Vec<Option<Run>>, slot: usize| {
            let r = runs.len();
            runs.push(None);
            (r, Worker::spawn(&cfg.worker, &worker_args(r, slot)))
        };
        let mut slots: Vec<Option<(usize, Worker)>> =
            (0..cfg.processes).map(|slot| Some(spawn(&mut runs, slot))).collect();
        // A run that ended, with its effects, logged.
        let finish = |r: usize, slot: usize, mut run: Run, this: &mut Self, open_failed: bool| {
            run.effects = new_effects(&dir.join(format!("effects-{r}")), &mut 0);
            run.slot = slot;
            this.ended(r, &run, open_failed);
            run
        };
        while self.kills < self.want && runs.len() < 4 * self.want + cfg.processes {
            let during_start = splitmix(self.rng).is_multiple_of(8);
            let delay = splitmix(self.rng) % (cfg.max_kill_delay_ms + 1);
            let slot = usize::try_from(splitmix(self.rng) % cfg.processes as u64).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(delay));
            // Processes that finished by themselves (every instance completed) are not started
            // again: the epoch is over.
            for (s, entry) in slots.iter_mut().enumerate() {
                if entry.as_mut().is_some_and(|(_, w)| w.exited())
                    && let Some((r, w)) = entry.take()
                {
                    runs[r] = Some(finish(r, s, w.finish(cfg.finish_timeout), self, false));
                }
            }
            if slots.iter().any(Option::is_none) {
                break;
            }
            let Some((r, mut worker)) = slots[slot].take() else { continue };
            let open_failed = !during_start && !worker.wait_opened(Duration::from_secs(30));
            let mut run = worker.kill();
            run.delay_ms = delay;
            run.after_open = !during_start;
            runs[r] = Some(finish(r, slot, run, self, open_failed));
            slots[slot] = Some(spawn(&mut runs, slot));
        }
        for (s, entry) in slots.iter_mut().enumerate() {
            if let Some((r, w)) = entry.take() {
                runs[r] = Some(finish(r, s, w.finish(cfg.finish_timeout), self, false));
            }
        }
        (runs.into_iter().map(Option::unwrap_or_default).collect(), instances)
    }
}

/// Checks one epoch's runs (the last one ran to the end) against the reference.
fn check_epoch(epoch: usize, runs: &[Run], reference: &Reference, summary: &mut Summary) {
    let mut v = Vec::new();

    // Processes: killed, or ended by themselves successfully; nothing on stderr.
    for (r, run) in runs.iter().enumerate() {
        if run.timed_out {
            let waiting: Vec<&String> =
                run.out.iter().filter(|l| l.starts_with("waiting:")).rev().take(9).collect();
            v.push(format!(
                "run {r}: still unfinished after the timeout (stuck instances): {waiting:?}"
            ));
        } else if !run.killed && !run.success {
            v.push(format!("run {r}: exited with {} without a kill; {}", run.status, tail(run)));
        } else if !run.killed && !run.out.iter().any(|l| l == "all done") {
            v.push(format!("run {r}: exited without `all done`; {}", tail(run)));
        }
        let (known, unknown): (Vec<&String>, Vec<&String>) =
            run.err.iter().partition(|l| summary.known.iter().any(|k| l.contains(k)));
        for line in known {
            summary.findings.push(format!("epoch {epoch}: run {r}: {line}"));
        }
        if !unknown.is_empty() {
            v.push(format!("run {r}: wrote to stderr: {unknown:?}"));
        }
    }

    // When line `i` of run `r` was read: the order of lines across processes.
    let time = |r: usize, i: usize| runs[r].at.get(i).copied().unwrap_or(u64::MAX);

    // Checkpoints: each (instance, step) printed once, in a known outcome.
    let mut checkpoints: HashMap<(String, u64), Vec<(usize, usize)>> = HashMap::new();
    for (r, run) in runs.iter().enumerate() {
        for (i, line) in run.out.iter().enumerate() {
            if let Some((instance, step, outcome)) = parse_checkpoint(line) {
                if outcome != "suspended" && outcome != "completed" {
                    v.push(format!("run {r}: unexpected outcome: {line}"));
                }
                checkpoints.entry((instance, step)).or_default().push((r, i));
            }
        }
    }
    for ((instance, step), at) in &checkpoints {
        if at.len() > 1 {
            let runs: Vec<usize> = at.iter().map(|(r, _)| *r).collect();
            v.push(format!(
                "checkpointed step executed again: `checkpoint {instance} {step}` printed by runs \
                 {runs:?}"
            ));
        }
    }
    // The first record of each: (run, line, time).
    let first =
        |at: &[(usize, usize)]| at.iter().map(|&(r, i)| (r, i, time(r, i))).min_by_key(|x| x.2);

    // Join branches whose result was stored before their join's step: the first time each was.
    let mut branches: HashMap<(String, u64, usize), Vec<(usize, usize)>> = HashMap::new();
    for (r, run) in runs.iter().enumerate() {
        for (i, line) in run.out.iter().enumerate() {
            if let Some(key) = parse_branch(line) {
                branches.entry(key).or_default().push((r, i));
            }
        }
    }

    // Activity starts, in the order they were read.
    let mut starts: BTreeMap<String, Vec<Start>> = BTreeMap::new();
    for (r, run) in runs.iter().enumerate() {
        for (i, line) in run.out.iter().enumerate() {
            if let Some((effect, instance, step, branch)) = parse_start(line) {
                starts.entry(effect).or_default().push(Start {
                    run: r,
                    line: i,
                    instance,
                    consumed_by: step + 1,
                    branch,
                });
            }
        }
    }
    for list in starts.values_mut() {
        list.sort_by_key(|s| (time(s.run, s.line), s.run, s.line));
    }
    for (effect, list) in &starts {
        // The result is safe from the first durable record of it: the step that consumed it, or
        // its branch's own record inside a join.
        let (instance, consumed_by) = (list[0].instance.clone(), list[0].consumed_by);
        let step = checkpoints.get(&(instance.clone(), consumed_by)).and_then(|at| first(at));
        let branch =
            branches.get(&(instance, consumed_by - 1, list[0].branch)).and_then(|at| first(at));
        let consumed = [step, branch].into_iter().flatten().min_by_key(|x| (x.2, x.1));
        // Whether run `r`, killed, had seen the result made durable: by itself (every line of a
        // killed process was printed before the kill), or by another process before the kill.
        let safe_before_kill =
            |r: usize| consumed.is_some_and(|(cr, _, ct)| cr == r || ct < runs[r].killed_at);
        for (k, s) in list.iter().enumerate() {
            let at = time(s.run, s.line);
            // Within a process by its own order of lines, across processes by the time read.
            if let Some((cr, ci, ct)) = consumed
                && (if cr == s.run { ci < s.line } else { ct < at })
            {
                v.push(format!(
                    "activity `{effect}` started in run {} after its result was checkpointed \
                     (`checkpoint {} {}` in run {cr})",
                    s.run, s.instance, s.consumed_by
                ));
            }
            if list[..k].iter().any(|p| p.run == s.run) {
                v.push(format!("activity `{effect}` started twice in run {}", s.run));
                continue;
            }
            // Started again: only after a kill caught an earlier start (in another process) in
            // flight, that is before any process made its result durable.
            let explained = list[..k].iter().any(|p| {
                p.run != s.run
                    && runs[p.run].killed
                    && runs[p.run].killed_at < at
                    && !safe_before_kill(p.run)
            });
            if k > 0 && !explained {
                let earlier: Vec<String> = list[..k]
                    .iter()
                    .map(|p| {
                        let run = &runs[p.run];
                        let why = if !run.killed {
                            "not killed"
                        } else if safe_before_kill(p.run) {
                            "killed after its result was checkpointed"
                        } else {
                            "killed after this start"
                        };
                        format!("run {} ({why})", p.run)
                    })
                    .collect();
                v.push(format!(
                    "activity `{effect}` ran again in run {} although no kill caught an earlier \
                     start in flight: {}",
                    s.run,
                    earlier.join(", ")
                ));
            }
        }
        for s in list {
            if runs[s.run].killed && !safe_before_kill(s.run) {
                summary.in_flight += 1;
            }
        }
    }

    // Effects: recorded only by a process that started the call, once per process; the same set
    // as the reference.
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for (r, run) in runs.iter().enumerate() {
        let mut here: BTreeMap<&String, usize> = BTreeMap::new();
        for e in &run.effects {
            *here.entry(e).or_default() += 1;
            *counts.entry(e).or_default() += 1;
        }
        for (e, n) in here {
            if n > 1 {
                v.push(format!("effect `{e}` recorded {n} times by run {r}"));
            }
            if !starts.get(e).is_some_and(|l| l.iter().any(|s| s.run == r)) {
                v.push(format!("effect `{e}` recorded by run {r}, which did not start it"));
            }
        }
    }
    for e in &reference.effects {
        if !counts.contains_key(e) {
            v.push(format!("effect `{e}` never recorded (the reference run recorded it)"));
        }
    }
    for (e, n) in &counts {
        if !reference.effects.contains(*e) {
            v.push(format!("effect `{e}` recorded {n} times, but not by the reference run"));
        }
        summary.activity_runs += n;
        summary.duplicates += n - 1;
        *summary.distribution.entry(*n).or_default() += 1;
    }
    summary.keys += counts.len();

    // The end state, as every process that ran to the end saw it: every instance completed with
    // the reference's output and step count.
    let mut finals = BTreeMap::new();
    for (r, run) in runs.iter().enumerate().filter(|(_, run)| run.last) {
        let outputs = tagged(&run.out, "completed: ");
        finals = tagged(&run.out, "final ");
        for (id, want) in &reference.outputs {
            match outputs.get(id) {
                Some(got) if got == want => {}
                Some(got) => {
                    v.push(format!("instance {id}: output {got}, reference {want} (run {r})"))
                }
                None => v.push(format!("instance {id}: no `completed:` line in run {r}")),
            }
        }
        for (id, want) in &reference.finals {
            match finals.get(id) {
                Some(got) if got == want => {}
                Some(got) => {
                    v.push(format!("instance {id}: ended as `{got}`, reference `{want}` (run {r})"))
                }
                None => v.push(format!("instance {id}: lost (the reference has it; run {r})")),
            }
        }
        for id in finals.keys().filter(|id| !reference.finals.contains_key(*id)) {
            v.push(format!("instance {id}: not in the reference (run {r})"));
        }
    }
    if !runs.iter().any(|run| run.last) {
        v.push("no process ran to the end".to_owned());
    }
    summary.all_instances += finals.len();
    summary.checkpoints += finals
        .values()
        .filter_map(|f| f.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>();

    summary.violations.extend(v.into_iter().map(|m| format!("epoch {epoch}: {m}")));
}

/// The checker on hand-made runs: a clean history passes, and each kind of damage is reported.
#[cfg(test)]
mod checker {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect()
    }

    /// Run 0 is killed while `t-0:1` is in flight (after its effect); run 1 runs it again and
    /// finishes.
    fn history() -> (Vec<Run>, Reference) {
        let killed = Run {
            killed: true,
            out: lines(
                "opened
                 checkpoint t-0 1 suspended
                 running mix for t-0 (key t-0:1, attempt 1)",
            ),
            effects: lines("mix t-0 t-0:1"),
            ..Run::default()
        };
        let last = Run {
            success: true,
            out: lines(
                "opened
                 running mix for t-0 (key t-0:1, attempt 1)
                 checkpoint t-0 2 completed
                 completed: t-0 5
                 final t-0 completed 2
                 all done",
            ),
            effects: lines("mix t-0 t-0:1"),
            last: true,
            ..Run::default()
        };
        let reference = Reference {
            outputs: [("t-0".to_owned(), "5".to_owned())].into(),
            finals: [("t-0".to_owned(), "completed 2".to_owned())].into(),
            effects: ["mix t-0 t-0:1".to_owned()].into(),
        };
        (vec![killed, last], reference)
    }

    /// Times the lines as if the runs ran one after the other, each killed after its last line.
    fn timed(runs: &mut [Run]) {
        for (r, run) in runs.iter_mut().enumerate() {
            let base = 1000 * r as u64;
            run.at = (0..run.out.len() as u64).map(|i| base + i).collect();
            run.killed_at = if run.killed { base + 999 } else { u64::MAX };
        }
    }

    fn violations(damage: impl FnOnce(&mut Vec<Run>, &mut Reference)) -> Vec<String> {
        let (mut runs, mut reference) = history();
        damage(&mut runs, &mut reference);
        timed(&mut runs);
        let mut summary = Summary::default();
        check_epoch(0, &runs, &reference, &mut summary);
        summary.violations
    }

    fn reports(damage: impl FnOnce(&mut Vec<Run>, &mut Reference), what: &str) {
        let v = violations(damage);
        assert!(v.iter().any(|m| m.contains(what)), "expected `{what}` in {v:#?}");
    }

    #[test]
    fn a_clean_history_passes_and_counts_the_duplicate() {
        let (mut runs, reference) = history();
        timed(&mut runs);
        let mut summary = Summary::default();
        check_epoch(0, &runs, &reference, &mut summary);
        assert!(summary.violations.is_empty(), "{:#?}", summary.violations);
        assert_eq!((summary.in_flight, summary.duplicates, summary.activity_runs), (1, 1, 2));
        assert_eq!(summary.distribution, [(2, 1)].into());
    }

    #[test]
    fn a_join_branch_recorded_before_a_kill_must_not_run_again() {
        // Run 0 stored branch 0's result (`branch t-0 1 0`) before it was killed; run 1 running
        // that activity again is a violation, exactly like re-running a checkpointed step.
        reports(
            |r, _| r[0].out.push("branch t-0 1 0".into()),
            "started in run 1 after its result was checkpointed",
        );
        // A record of another branch does not cover this one.
        let v = violations(|r, _| r[0].out.push("branch t-0 1 3".into()));
        assert!(v.is_empty(), "{v:#?}");
    }

    /// Processes side by side (PostgreSQL): an activity may start again in another process only
    /// after a kill caught an earlier start in flight.
    #[test]
    fn side_by_side_a_restart_needs_a_kill_before_it() {
        let side_by_side = |kill_at: u64| {
            let (mut runs, reference) = history();
            // Run 1 ran alongside run 0: opened before run 0's lines, the rerun after `kill_at`.
            runs[0].at = vec![10, 20, 30];
            runs[0].killed_at = kill_at;
            runs[1].at = vec![5, 100, 110, 120, 130, 140];
            let mut summary = Summary::default();
            check_epoch(0, &runs, &reference, &mut summary);
            summary.violations
        };
        assert!(side_by_side(50).is_empty(), "{:#?}", side_by_side(50));
        let v = side_by_side(105);
        assert!(
            v.iter().any(|m| m.contains(
                "no kill caught an earlier start in flight: run 0 (killed after this start)"
            )),
            "{v:#?}"
        );
    }

    #[test]
    fn each_kind_of_damage_is_reported() {
        // The killed run had already checkpointed the step that consumed the result.
        reports(
            |r, _| r[0].out.push("checkpoint t-0 2 completed".into()),
            "checkpointed step executed again",
        );
        reports(
            |r, _| r[0].out.push("checkpoint t-0 2 completed".into()),
            "started in run 1 after its result was checkpointed",
        );
        // No kill explains the second run of the activity.
        reports(
            |r, _| r[0].killed = false,
            "no kill caught an earlier start in flight: run 0 (not killed)",
        );
        reports(
            |r, _| {
                let again = r[1].out[1].clone();
                r[1].out.insert(1, again);
            },
            "started twice in run 1",
        );
        reports(|r, _| r[1].effects.push("mix t-0 t-0:1".into()), "recorded 2 times by run 1");
        reports(|r, _| r[0].out.truncate(2), "recorded by run 0, which did not start it");
        reports(
            |_, reference| {
                reference.effects.insert("mix t-0 t-0:9".into());
            },
            "never recorded",
        );
        reports(|r, _| r[1].effects.push("mix t-0 t-0:7".into()), "not by the reference run");
        reports(|r, _| r[1].out[3] = "completed: t-0 6".into(), "output 6, reference 5");
        reports(|r, _| r[1].out.retain(|l| !l.starts_with("final")), "lost");
        reports(|r, _| r[1].out[2] = "checkpoint t-0 2 Failed".into(), "unexpected outcome");
        reports(
            |r, _| {
                r[1].timed_out = true;
                r[1].success = false;
            },
            "stuck",
        );
        reports(|r, _| r[1].err.push("thread panicked".into()), "wrote to stderr");
    }
}
