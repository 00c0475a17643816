//! The crash-torture worker: many instances of six orchestrations that together use every kind
//! of durable operation (activity sequences, loops, fan-out, timers, external events, races and
//! sub-orchestrations). `tests/torture.rs` and `examples/torture_driver.rs` SIGKILL it at random
//! moments, restart it, and compare the end result with a run that was never killed.
//!
//! ```text
//! cargo run --example torture -- --db /tmp/t.db --effects /tmp/t.effects --instances 30
//! ```
//! Starts `t-0` … `t-{N-1}` (idempotently: a restart starts only what is missing), feeds their
//! external events, and waits for all of them. With `--postgres URL --pg-schema S --lease-ms N`
//! several processes share one database (`tests/torture_postgres.rs`): each starts and waits for
//! the same instances, and only the one without `--feed no` raises events, looking at every
//! running instance every 50 ms since they may step in another process. Warnings of the runtime
//! (a lost lease, a refused write) go to stderr. It prints, for the driver to read:
//!
//! - `checkpoint <instance> <step> <outcome>` after every durable checkpoint;
//! - `branch <instance> <step> <n>` when branch `n` of the join issued at `step` has its result
//!   stored (durably) before the join's own step;
//! - `running <activity> for <instance> (key <key>, attempt <n>)` when an activity starts;
//! - `raised <instance> <event>` when it raised an event (durably);
//! - `completed: <id> <output>` per top-level instance, then `final <id> <state> <steps>` for
//!   every stored instance (children too) and `all done`.
//!
//! Every output is a function of the instance's input only, never of timing.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use durable::{
    ActivityContext, Ctx, Durability, Either, Failure, InstanceState, ListFilter, Runtime,
    StepOutcome, activity, durable_fn, orchestration,
};

use common::{Options, side_effect};

/// A deterministic mixing function: what every activity computes.
fn mixed(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 1_000_000_007
}

/// The payload the feeder raises for `event` of `instance`, and the orchestration expects.
fn payload(instance: &str, event: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for b in instance.bytes().chain([b'/']).chain(event.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % 1_000_003
}

/// The one activity: announces itself, waits `--delay-ms`, records its effect (fsynced), waits
/// a little more (so that kills also land after the effect and before the checkpoint), returns.
#[activity]
async fn mix(ctx: ActivityContext, a: u64, b: u64) -> Result<u64, String> {
    side_effect(&ctx).await;
    tokio::time::sleep(Duration::from_millis(mixed(a, b) % 15)).await;
    Ok(mixed(a, b))
}

/// Three activities in a row.
#[orchestration]
async fn sequence(ctx: Ctx, seed: u64) -> Result<u64, Failure> {
    let a = ctx.call(mix, (seed, 1)).await?;
    let b = ctx.call(mix, (a, 2)).await?;
    let c = ctx.call(mix, (b, 3)).await?;
    Ok(c)
}

/// A loop of activities, with a short timer in some rounds and a recorded random number.
#[orchestration]
async fn looping(ctx: Ctx, seed: u64, rounds: u64) -> Result<u64, Failure> {
    // About 45 KB alive and unchanged through every round: its chunks go to slots of their own,
    // listed by one slot (kills land on slot writes, on records naming them and on their
    // deletion at the end).
    let ballast: Vec<u64> =
        (0..5_000u64).map(|i| seed.rotate_left(i.trailing_zeros()) ^ i).collect();
    let mut acc = seed;
    // An owned collection, not a range: the loop keeps its items and a count taken.
    let rounds: Vec<u64> = (0..rounds).collect();
    for i in rounds {
        if (acc + ctx.random()) % 3 == 0 {
            ctx.sleep(Duration::from_millis(10)).await;
            continue;
        }
        acc = ctx.call(mix, (acc, i)).await?;
    }
    Ok(acc ^ ballast.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
}

/// Fan-out over `width` activities, fan-in, one more activity.
#[orchestration]
async fn fan_out(ctx: Ctx, seed: u64, width: u64) -> Result<u64, Failure> {
    let calls: Vec<_> = (0..width).map(|i| ctx.call(mix, (seed, i))).collect();
    let mut total = 0u64;
    for r in ctx.join(calls).await {
        total = total.wrapping_add(r?);
    }
    let out = ctx.call(mix, (total, width)).await?;
    Ok(out)
}

/// Durable timers of tens of milliseconds, alone and joined with an activity.
#[orchestration]
async fn timers(ctx: Ctx, seed: u64) -> Result<u64, Failure> {
    ctx.sleep(Duration::from_millis(20 + seed % 30)).await;
    let a = ctx.call(mix, (seed, 7)).await?;
    ctx.sleep(Duration::from_millis(40)).await;
    let (b, ()) = ctx.join2(ctx.call(mix, (a, 8)), ctx.sleep(Duration::from_millis(30))).await;
    let c = ctx.call(mix, (b?, 9)).await?;
    Ok(c)
}

/// Waits for `count` external events (the worker's feeder raises each one when the custom
/// status asks for it), then races one more event against a long timer (the event wins).
#[orchestration]
async fn events(ctx: Ctx, seed: u64, count: u64) -> Result<u64, Failure> {
    let mut acc = seed;
    for n in 0..count {
        let name = format!("e{n}");
        ctx.set_status(&format!("want {name}"));
        let got: u64 = ctx.wait_event(name.clone()).await?;
        // Set in the step that takes the event, so it changes in the same write.
        ctx.set_status(&format!("got {name}"));
        if got != payload(ctx.instance_id(), &name) {
            return Err(Failure::new(format!("event {name} carried {got}")));
        }
        acc = ctx.call(mix, (acc, got)).await?;
    }
    ctx.set_status(&"want go".to_string());
    let raced = ctx.race2(ctx.wait_event::<u64>("go"), ctx.sleep(Duration::from_secs(3600))).await;
    ctx.set_status(&"got go".to_string());
    let go = match raced {
        Either::Left(v) => v?,
        Either::Right(()) => return Err(Failure::new("the timer won the race")),
    };
    let out = ctx.call(mix, (acc, go)).await?;
    Ok(out)
}

/// Sub-orchestrations: one alone, then a child and an activity side by side, then a child that
/// waits for events.
#[orchestration]
async fn parent(ctx: Ctx, seed: u64) -> Result<u64, Failure> {
    let a = ctx.child(sequence, seed).await?;
    let (b, c) = ctx.join2(ctx.child(fan_out, (a, 3)), ctx.call(mix, (a, 4))).await;
    let d = ctx.child(events, (b? ^ c?, 1)).await?;
    let out = ctx.call(mix, (d, 5)).await?;
    Ok(out)
}

/// Reusable durable code: a loop of activities with a timer, inside a durable function.
#[durable_fn]
async fn mix_rounds(ctx: &Ctx, seed: u64, rounds: u64) -> Result<u64, Failure> {
    let mut acc = seed;
    for i in 0..rounds {
        if i == 1 {
            ctx.sleep(Duration::from_millis(15)).await;
        }
        acc = ctx.call(mix, (acc, 100 + i)).await?;
    }
    Ok(acc)
}

/// Two calls of a durable function, with the orchestration's own local kept across both.
#[orchestration]
async fn composed(ctx: Ctx, seed: u64) -> Result<u64, Failure> {
    let first = mix_rounds(&ctx, seed, 3).await?;
    let second = mix_rounds(&ctx, first ^ seed, 2).await?;
    let out = ctx.call(mix, (first, second)).await?;
    Ok(out)
}

const KINDS: u64 = 7;

/// Starts instance `i` (idempotent).
async fn start(rt: &Runtime, i: u64) -> Result<(), durable::StartError> {
    let id = format!("t-{i}");
    let seed = mixed(i, 0);
    match i % KINDS {
        0 => rt.start(sequence, id, seed).await.map(drop),
        1 => rt.start(looping, id, (seed, 6)).await.map(drop),
        2 => rt.start(fan_out, id, (seed, 5)).await.map(drop),
        3 => rt.start(timers, id, seed).await.map(drop),
        4 => rt.start(events, id, (seed, 3)).await.map(drop),
        5 => rt.start(parent, id, seed).await.map(drop),
        _ => rt.start(composed, id, seed).await.map(drop),
    }
}

fn outcome_word(outcome: &StepOutcome) -> String {
    match outcome {
        StepOutcome::Suspended(_) => "suspended".into(),
        StepOutcome::Completed => "completed".into(),
        StepOutcome::ContinuedAsNew => "continued".into(),
        other => format!("{other:?}").replace(['\n', ' '], "_"),
    }
}

/// Raises the event an instance's custom status asks for, unless one is already buffered.
async fn feed(rt: &Runtime, id: &str) {
    let Ok(Some(status)) = rt.status(id) else { return };
    if status.state != InstanceState::Running || status.buffered_events != 0 {
        return;
    }
    let Some(Ok(custom)) = status.custom_status::<String>() else { return };
    let Some(event) = custom.strip_prefix("want ") else { return };
    match rt.raise_event(id, event, &payload(id, event)).await {
        Ok(()) => println!("raised {id} {event}"),
        Err(e) => println!("raise {id} {event} refused: {e}"),
    }
}

/// Every stored instance id.
fn all_ids(rt: &Runtime, states: Option<Vec<InstanceState>>) -> Vec<durable::InstanceStatus> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let filter =
            ListFilter { states: states.clone(), after, limit: Some(500), ..Default::default() };
        let page = match rt.list(&filter) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: list: {e}");
                std::process::exit(1);
            }
        };
        out.extend(page.instances);
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// Prints the runtime's warnings and errors (`tracing`) on stderr, where the driver sees them:
/// a lost lease, a refused write or an unreadable record is worth a look even when the end
/// result is right.
struct StderrWarnings;

impl tracing::Subscriber for StderrWarnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        eprintln!("{} {}:{}", event.metadata().level(), event.metadata().target(), text.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("error: {what}: {e}");
    std::process::exit(1);
}

#[tokio::main]
async fn main() {
    let _ = tracing::subscriber::set_global_default(StderrWarnings);
    let options = Options::parse("torture");
    let instances: u64 = options.get("instances").and_then(|v| v.parse().ok()).unwrap_or(30);
    // `--durability buffered` breaks the guarantee on purpose: the driver's own test uses it to
    // show that its checks catch lost checkpoints.
    let durability = match options.get("durability") {
        Some("buffered") => Durability::Buffered,
        _ => Durability::Flush,
    };
    // `--feed no`: leave the events to another process. With several processes on one
    // PostgreSQL database exactly one feeds (two feeders would raise an event twice, and an
    // instance waiting for its next event would find the stale second copy).
    let feeds = options.get("feed") != Some("no");
    println!("worker {} opening", std::process::id());

    // Checkpoints of suspended instances go to the feeder, which raises wanted events.
    let (to_feeder, mut feeder_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let configure = |builder: durable::RuntimeBuilder| {
        let to_feeder = to_feeder.clone();
        builder
            .orchestration(sequence)
            .orchestration(looping)
            .orchestration(fan_out)
            .orchestration(timers)
            .orchestration(events)
            .orchestration(parent)
            .orchestration(composed)
            .durability(durability)
            .on_step(move |e| {
                if let StepOutcome::BranchRecorded(b) = e.outcome {
                    // A join branch's result stored on its own, before the join's step.
                    println!("branch {} {} {b}", e.instance, e.step);
                    return;
                }
                println!("checkpoint {} {} {}", e.instance, e.step, outcome_word(&e.outcome));
                if matches!(e.outcome, StepOutcome::Suspended(_)) {
                    let _ = to_feeder.send(e.instance.clone());
                }
            })
    };
    let runtimes = if options.postgres.is_some() {
        // `--postgres URL --pg-schema S --lease-ms N [--workers N]`.
        options.open(configure).await
    } else {
        // `TORTURE_REOPEN_EVERY=N` makes the store snapshot itself (close and reopen sled)
        // every N writes, so that kills also land around those reopens.
        let mut builder = Runtime::builder(&options.db);
        if let Some(n) = std::env::var("TORTURE_REOPEN_EVERY").ok().and_then(|v| v.parse().ok()) {
            let store = durable::store::SledStore::open_with(&options.db, n)
                .unwrap_or_else(|e| fail("open", e));
            builder = builder.store(std::sync::Arc::new(store));
        }
        vec![configure(builder).open().await.unwrap_or_else(|e| fail("open", e))]
    };
    drop(to_feeder);
    let rt = runtimes[0].clone();
    println!("opened");

    if feeds {
        let feeder = rt.clone();
        // The instances of other processes suspend there: the feeder also looks at every
        // running instance now and then (`status` reads a record and its inbox together, so
        // "want X" with nothing buffered means X was not raised yet).
        let poll = options.postgres.is_some();
        tokio::spawn(async move {
            // Instances that were parked at an event when the previous process died.
            for status in all_ids(&feeder, Some(vec![InstanceState::Running])) {
                feed(&feeder, &status.id).await;
            }
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    id = feeder_rx.recv() => match id {
                        Some(id) => feed(&feeder, &id).await,
                        None => return,
                    },
                    _ = tick.tick(), if poll => {
                        // The list is cheap; `feed` reads the consistent status of those that
                        // seem to wait for an event.
                        for status in all_ids(&feeder, Some(vec![InstanceState::Running])) {
                            if let Some(Ok(custom)) = status.custom_status::<String>()
                                && custom.starts_with("want ")
                            {
                                feed(&feeder, &status.id).await;
                            }
                        }
                    }
                }
            }
        });
    }

    for i in 0..instances {
        if let Err(e) = start(&rt, i).await {
            fail("start", e);
        }
    }
    println!("started {instances}");

    let mut unfinished: BTreeSet<String> = (0..instances).map(|i| format!("t-{i}")).collect();
    let mut failed = false;
    let mut report = Instant::now();
    while !unfinished.is_empty() {
        let mut done = Vec::new();
        for id in &unfinished {
            let status = match rt.status(id) {
                Ok(Some(s)) => s,
                Ok(None) => fail("status", format!("instance {id} is missing")),
                Err(e) => fail("status", e),
            };
            match &status.state {
                InstanceState::Running => {}
                InstanceState::Completed => {
                    match status.output::<u64>() {
                        Some(Ok(out)) => println!("completed: {id} {out}"),
                        other => fail("output", format!("{id}: {other:?}")),
                    }
                    done.push(id.clone());
                }
                other => {
                    println!("failed: {id} {other:?}");
                    failed = true;
                    done.push(id.clone());
                }
            }
        }
        for id in done {
            unfinished.remove(&id);
        }
        if report.elapsed() > Duration::from_secs(5) {
            report = Instant::now();
            let some: Vec<_> = unfinished.iter().take(8).cloned().collect();
            println!("waiting: {} unfinished, e.g. {some:?}", unfinished.len());
            for id in some {
                if let Ok(Some(s)) = rt.status(&id) {
                    println!(
                        "waiting: {id} steps {} pending {:?} status {:?} buffered {}",
                        s.steps,
                        s.pending,
                        s.custom_status::<String>(),
                        s.buffered_events
                    );
                }
            }
        }
        if !unfinished.is_empty() {
            // Every status is a round trip that blocks a thread of the runtime: on a shared
            // database, look less often.
            let every = if options.postgres.is_some() { 100 } else { 20 };
            tokio::time::sleep(Duration::from_millis(every)).await;
        }
    }
    for s in all_ids(&rt, None) {
        let state = match s.state {
            InstanceState::Completed => "completed".to_string(),
            other => format!("{other:?}").replace(['\n', ' '], "_"),
        };
        println!("final {} {state} {}", s.id, s.steps);
    }
    // `status` shows the latest writes, which the group commit may not have flushed yet: stop
    // cleanly (a final flush) before announcing the end, or the last steps of a process that
    // exits right away could run again in the next one.
    for rt in &runtimes {
        rt.shutdown().await;
    }
    println!("all done");
    std::process::exit(i32::from(failed));
}
