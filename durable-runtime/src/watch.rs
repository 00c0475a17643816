//! The watcher of a store that several processes share: what other processes change reaches
//! this runtime as [`Change`]s from the store, and a bounded poll finds what those missed.
//!
//! A change to an instance wakes it here (a worker takes its lease and looks; a client-only
//! runtime only tells its waiting clients). The announcements that arrived together are claimed
//! with one store call, on a blocking thread, since it may wait for a row another transaction
//! holds. Every poll interval a worker claims the unfinished
//! instances whose lease ran out while held (a worker died or stalled) and its timer task looks
//! at the timer index again (timers other workers set). When the store says it missed changes
//! (or stops telling), the worker claims every unfinished instance no live lease holds, since a
//! wake-up may have been lost; otherwise only every [`SWEEP_EVERY`]th poll. Not at every poll:
//! that would claim, read and release every waiting instance of the database every second.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::engine::{Engine, lock};
use crate::store::{Change, StoreError};

/// Every how many polls a worker of a store that notifies claims every unfinished instance
/// nobody holds, not only abandoned ones: the bound on how late a change that was lost without
/// the store knowing is found.
const SWEEP_EVERY: u64 = 30;

/// At most how many announced instances one claim takes.
const BURST: usize = 256;

/// Starts watching the store of `engine`, polling every `poll`.
pub(crate) fn start(engine: &Arc<Engine>, poll: Duration) -> Result<(), StoreError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
    // The store may call from a thread of its own, outside any tokio runtime: hand over.
    engine.records.watch(Arc::new(move |change| {
        let _ = tx.send(change);
    }))?;
    let weak = Arc::downgrade(engine);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watching = true;
        let mut ticks: u64 = 0;
        // A change taken from the channel while collecting a burst, looked at next.
        let mut held: Option<Change> = None;
        let claims = Arc::new(Claims::default());
        loop {
            // `None`: the poll's tick.
            let change = if let Some(c) = held.take() {
                Some(c)
            } else {
                tokio::select! {
                    c = rx.recv(), if watching => match c {
                        Some(c) => Some(c),
                        None => {
                            // The store stopped telling: the poll alone finds work now, all of it.
                            watching = false;
                            Some(Change::Missed)
                        }
                    },
                    _ = tick.tick() => None,
                }
            };
            let Some(engine) = weak.upgrade() else { return };
            if engine.is_shut_down() {
                return;
            }
            engine.changed();
            let claimed = match change {
                Some(Change::Instance(id)) => {
                    // The announcements that came meanwhile are looked at together: one claim.
                    let mut ids = vec![id];
                    let mut drained = false;
                    while ids.len() < BURST {
                        match rx.try_recv() {
                            Ok(Change::Instance(id)) => ids.push(id),
                            Ok(Change::Stepped(_)) => {}
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                        drained = true;
                    }
                    if drained {
                        // Waiting clients look again, at what the drained changes announced.
                        engine.changed();
                    }
                    claims.add(&engine, ids);
                    continue;
                }
                // Its runner goes on with it; waiting clients were told above.
                Some(Change::Stepped(_)) => continue,
                // Without notifications every instance nobody holds may have work.
                _ if !watching => engine.resume_all(),
                // Announced changes were missed: look at every instance nobody holds.
                Some(_) => engine.resume_all(),
                // Instances nobody holds had their changes announced: only the leases that
                // ran out are looked for, not every waiting instance, at every tick; every
                // instance only at every `SWEEP_EVERY`th, for a change lost unannounced.
                None => {
                    ticks += 1;
                    if ticks.is_multiple_of(SWEEP_EVERY) {
                        engine.resume_all()
                    } else {
                        engine.resume_abandoned()
                    }
                }
            };
            if let Err(e) = claimed {
                tracing::warn!("cannot claim instances: {e}");
            }
            engine.timer_wake.notify_one();
        }
    });
    lock(&engine.tasks).push(task);
    Ok(())
}

/// The announced instances waiting to be claimed, and the claimers working on them, each on a
/// blocking thread: a claim may wait for a row another transaction holds, and the watcher must
/// go on receiving meanwhile. What arrives during a claim is claimed next, together, by a
/// claimer that is running; another one starts only when none runs or the latest claim has
/// been waiting for longer than [`STUCK`] (a held row), so a held row holds up nothing else.
#[derive(Default)]
struct Claims {
    queue: std::sync::Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    ids: Vec<String>,
    /// Claimers running.
    running: usize,
    /// When the latest claim call began.
    latest: Option<std::time::Instant>,
}

/// How long a claim may take before the next announcements get a claimer of their own.
const STUCK: Duration = Duration::from_millis(50);
/// At most this many claimers at once.
const MAX_CLAIMERS: usize = 8;

impl Claims {
    fn add(self: &Arc<Self>, engine: &Arc<Engine>, ids: Vec<String>) {
        {
            let mut queue = lock(&self.queue);
            queue.ids.extend(ids);
            let stuck = queue.latest.is_some_and(|at| at.elapsed() > STUCK);
            if queue.running > 0 && !(stuck && queue.running < MAX_CLAIMERS) {
                return;
            }
            queue.running += 1;
            // Counts as a fresh claim: the next announcements wait for this claimer first.
            queue.latest = Some(std::time::Instant::now());
        }
        let (claims, engine) = (self.clone(), Arc::downgrade(engine));
        tokio::task::spawn_blocking(move || {
            loop {
                let batch = {
                    let mut queue = lock(&claims.queue);
                    if queue.ids.is_empty() {
                        queue.running -= 1;
                        return;
                    }
                    queue.latest = Some(std::time::Instant::now());
                    std::mem::take(&mut queue.ids)
                };
                let Some(engine) = engine.upgrade() else {
                    lock(&claims.queue).running -= 1;
                    return;
                };
                // A panic must not end the claimer with its count kept: no claim would start.
                match crate::error::unless_panics(|| engine.wake_announced(batch)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("cannot claim instances: {e}"),
                    Err(panic) => tracing::error!("claiming instances panicked: {panic}"),
                }
            }
        });
    }
}
