//! The power-cut worker and checker (driven by `tests/support/powercut.rs`).
//!
//! ```text
//! powercut work  --db DIR --seed S [--instances N] [--steps K] [--reopen-every W] [--durability buffered]
//! powercut check --db DIR --acks FILE
//! ```
//! `work` starts instances whose locals and activity results range from 64 bytes to 3 MiB (so
//! sled writes some of them as blob files), raises an event to each, waits for every result and
//! exits cleanly. It prints a line for each acknowledgement the runtime gives, at the moment it
//! gets it: `ack start ID`, `ack raise ID`, `ack step ID N` (checkpoint N is durable),
//! `ack done ID OUTPUT`, `ack exit`.
//!
//! `check` opens a database that a simulated power cut left behind and checks it against those
//! lines: it opens; every acknowledged start, event, checkpoint and result is there; and every
//! instance it holds then runs to the result a run without a cut gives. It prints one
//! `violation: …` line per problem and exits 1 if there was any (2 for bad usage).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use durable::store::{SledStore, Space, Store};
use durable::{
    Ctx, Durability, Failure, InstanceState, Runtime, StepOutcome, activity, orchestration,
};
use serde::{Deserialize, Serialize};

/// The payload limit the worker runs with: the largest values come close to it.
const MAX_PAYLOAD: usize = 5 << 19;
/// Value sizes, chosen per instance: inline values, values over sled's blob threshold
/// (~128 KiB), and values close to half the payload limit (a record holds two of them).
const SIZES: [usize; 4] = [64, 12_000, 300_000, 1 << 20];

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Work {
    size: usize,
    steps: u32,
}

/// A deterministic value of `size` bytes for step `step`.
#[activity]
async fn make(input: (u32, usize)) -> Result<String, String> {
    Ok(value(input.0, input.1))
}

fn value(step: u32, size: usize) -> String {
    let unit = format!("<{step}>");
    unit.repeat(size / unit.len() + 1)[..size].to_owned()
}

fn digest(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Waits for `go`, then walks `steps` steps, each keeping a value of `size` bytes alive that
/// changes at every step, and one of up to 200,000 bytes that does not (stored in slots of its
/// own once seen unchanged: cuts land on slot writes, on records naming them, and on their
/// deletion when the instance ends).
#[orchestration]
async fn churn(ctx: Ctx, work: Work) -> Result<u64, Failure> {
    let go: u64 = ctx.wait_event("go").await?;
    let base = value(u32::MAX, work.size.min(200_000));
    let mut kept: String = ctx.call(make, (0, work.size)).await?;
    let mut total = go;
    for step in 1..=work.steps {
        let next: String = ctx.call(make, (step, work.size)).await?;
        total = total.wrapping_mul(31).wrapping_add(digest(&kept));
        kept = next;
    }
    Ok(total.wrapping_mul(31).wrapping_add(digest(&kept)).wrapping_add(digest(&base)))
}

/// What `churn` returns, computed without the runtime.
fn expected(work: Work, go: u64) -> u64 {
    let mut kept = value(0, work.size);
    let mut total = go;
    for step in 1..=work.steps {
        total = total.wrapping_mul(31).wrapping_add(digest(&kept));
        kept = value(step, work.size);
    }
    let base = value(u32::MAX, work.size.min(200_000));
    total.wrapping_mul(31).wrapping_add(digest(&kept)).wrapping_add(digest(&base))
}

/// Instance `i`'s id, work and event value: the checker derives them the same way.
fn plan(seed: u64, i: usize, steps: u32) -> (String, Work, u64) {
    let pick = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ i as u64;
    let size = SIZES[usize::from(u8::try_from(pick % 4).unwrap_or(0))];
    (format!("pc-{seed:x}-{i}"), Work { size, steps }, 1000 + i as u64)
}

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}");
    eprintln!(
        "usage: powercut work --db DIR --seed S [--instances N] [--steps K] [--reopen-every W] [--durability buffered]"
    );
    eprintln!("       powercut check --db DIR --acks FILE");
    std::process::exit(2);
}

fn flags(args: impl Iterator<Item = String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        let Some(name) = flag.strip_prefix("--") else { usage(&format!("unexpected `{flag}`")) };
        let Some(value) = args.next() else { usage(&format!("`{flag}` needs a value")) };
        out.insert(name.to_owned(), value);
    }
    out
}

fn number<T: std::str::FromStr>(flags: &BTreeMap<String, String>, name: &str, default: T) -> T {
    match flags.get(name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| usage(&format!("`--{name}` takes a number"))),
    }
}

fn print_ack(event: &durable::StepEvent) {
    match event.outcome {
        StepOutcome::BranchRecorded(_) => {}
        _ if event.step > 0 => println!("ack step {} {}", event.instance, event.step),
        _ => {}
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| usage("missing mode"));
    let flags = flags(args);
    let db = flags.get("db").cloned().unwrap_or_else(|| usage("`--db` is required"));
    match mode.as_str() {
        "work" => work(&db, &flags).await,
        "check" => {
            let acks = flags.get("acks").unwrap_or_else(|| usage("`--acks` is required"));
            let violations = check(&db, acks).await;
            for v in &violations {
                println!("violation: {v}");
            }
            std::process::exit(i32::from(!violations.is_empty()));
        }
        other => usage(&format!("unknown mode `{other}`")),
    }
}

async fn work(db: &str, flags: &BTreeMap<String, String>) {
    let seed: u64 = number(flags, "seed", 1);
    let instances: usize = number(flags, "instances", 4);
    let steps: u32 = number(flags, "steps", 4);
    let reopen_every: u64 = number(flags, "reopen-every", SledStore::DEFAULT_REOPEN_EVERY);
    let durability = match flags.get("durability").map(String::as_str) {
        None | Some("flush") => Durability::Flush,
        Some("buffered") => Durability::Buffered,
        Some(other) => usage(&format!("unknown durability `{other}`")),
    };
    let store = match SledStore::open_with(db, reopen_every) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("cannot open {db}: {e}");
            std::process::exit(3);
        }
    };
    let rt = Runtime::builder(db)
        .store(store)
        .orchestration(churn)
        .durability(durability)
        .max_payload(MAX_PAYLOAD)
        .on_step(print_ack)
        .open()
        .await
        .unwrap_or_else(|e| {
            eprintln!("cannot open the runtime: {e}");
            std::process::exit(3);
        });
    println!("opened");
    let plans: Vec<_> = (0..instances).map(|i| plan(seed, i, steps)).collect();
    let mut handles = Vec::new();
    for (id, work, _) in &plans {
        match rt.start(churn, id.clone(), *work).await {
            Ok(h) => {
                println!("ack start {id}");
                handles.push(h);
            }
            Err(e) => eprintln!("start {id}: {e}"),
        }
    }
    for (id, _, go) in &plans {
        match rt.raise_event(id, "go", go).await {
            Ok(()) => println!("ack raise {id}"),
            Err(e) => eprintln!("raise {id}: {e}"),
        }
    }
    for h in handles {
        match h.wait().await {
            Ok(out) => println!("ack done {} {out}", h.id()),
            Err(e) => eprintln!("wait {}: {e}", h.id()),
        }
    }
    rt.shutdown().await;
    drop(rt);
    println!("ack exit");
}

/// What the worker acknowledged, per instance.
#[derive(Debug, Default)]
struct Acked {
    start: bool,
    raise: bool,
    step: u64,
    done: Option<u64>,
}

async fn check(db: &str, acks: &str) -> Vec<String> {
    let text = match std::fs::read_to_string(acks) {
        Ok(t) => t,
        Err(e) => usage(&format!("cannot read {acks}: {e}")),
    };
    let mut acked: BTreeMap<String, Acked> = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["ack", "start", id] => acked.entry((*id).into()).or_default().start = true,
            ["ack", "raise", id] => acked.entry((*id).into()).or_default().raise = true,
            ["ack", "step", id, n] => {
                let a = acked.entry((*id).into()).or_default();
                a.step = a.step.max(n.parse().unwrap_or(0));
            }
            ["ack", "done", id, out] => {
                acked.entry((*id).into()).or_default().done = out.parse().ok();
            }
            _ => {}
        }
    }
    let mut violations = Vec::new();
    let store = match SledStore::open(db) {
        Ok(s) => Arc::new(s),
        Err(e) => return vec![format!("the database does not open: {e}")],
    };
    // How many frame slots the cut left (the harness reports the total: proof the cuts land
    // where records name slots).
    match store.scan(Space::Slots, None, 100_000) {
        Ok(slots) => println!("slots {}", slots.len()),
        Err(e) => return vec![format!("the slots cannot be listed: {e}")],
    }
    let rt = Runtime::builder(db).store(store).orchestration(churn).max_payload(MAX_PAYLOAD);
    let rt = match rt.open().await {
        Ok(rt) => rt,
        Err(e) => return vec![format!("the database does not open: {e}")],
    };
    // Everything acknowledged is there.
    let mut present = Vec::new();
    let seeds = acked.keys().filter_map(|id| instance_of(id)).collect::<Vec<_>>();
    for (id, a) in &acked {
        let status = match rt.status(id) {
            Ok(s) => s,
            Err(e) => {
                violations.push(format!("{id}: unreadable: {e}"));
                continue;
            }
        };
        let Some(status) = status else {
            if a.start {
                violations.push(format!("{id}: acknowledged start lost"));
            }
            continue;
        };
        // Checkpoint 1 parks the instance at its `wait_event`: the event is consumed by checkpoint 2.
        let waiting = status.steps <= 1 && status.buffered_events == 0;
        if a.raise && waiting {
            violations.push(format!("{id}: acknowledged event lost"));
        }
        if status.steps < a.step {
            violations.push(format!(
                "{id}: checkpoint {} acknowledged, only {} survived",
                a.step, status.steps
            ));
        }
        if let Some(out) = a.done {
            match &status.state {
                InstanceState::Completed => match status.output::<u64>() {
                    Some(Ok(v)) if v == out => {}
                    other => violations
                        .push(format!("{id}: result {out} acknowledged, {other:?} stored")),
                },
                other => {
                    violations.push(format!("{id}: result {out} acknowledged, state {other:?}"))
                }
            }
        }
        present.push((id.clone(), waiting));
    }
    // And every instance there finishes as a run without a cut does.
    for (id, needs_go) in present {
        let Some((seed, i, steps)) = seeds.iter().find(|s| s.0 == id).map(|s| (s.1, s.2, s.3))
        else {
            continue;
        };
        let (_, work, go) = plan(seed, i, steps);
        if needs_go && let Err(e) = rt.raise_event(&id, "go", &go).await {
            violations.push(format!("{id}: cannot raise: {e}"));
            continue;
        }
        match rt.handle::<churn>(&id).wait_timeout(Duration::from_secs(120)).await {
            Some(Ok(v)) if v == expected(work, go) => {}
            other => violations
                .push(format!("{id}: finished with {other:?}, expected {}", expected(work, go))),
        }
    }
    rt.shutdown().await;
    violations
}

/// The seed, index and step count an id was planned with: ids are `pc-<seed>-<i>`; the steps
/// come from the worker's default, which the driver does not change.
fn instance_of(id: &str) -> Option<(String, u64, usize, u32)> {
    let rest = id.strip_prefix("pc-")?;
    let (seed, i) = rest.split_once('-')?;
    Some((id.to_owned(), u64::from_str_radix(seed, 16).ok()?, i.parse().ok()?, 4))
}
