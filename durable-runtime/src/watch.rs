//! The watcher of a store that several processes share: what other processes change reaches
//! this runtime as [`Change`]s from the store, and a bounded poll finds what those missed.
//!
//! A change to an instance wakes it here (a worker takes its lease and looks; a client-only
//! runtime only tells its waiting clients). Every poll interval, and whenever the store says it
//! missed changes, a worker claims the unfinished instances that no live lease holds (those of
//! a worker that died, or whose wake-up was lost) and its timer task looks at the timer index
//! again (timers other workers set).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::engine::{Engine, lock};
use crate::store::{Change, StoreError};

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
        loop {
            let change = tokio::select! {
                c = rx.recv(), if watching => match c {
                    Some(c) => c,
                    None => {
                        // The store stopped telling: the poll alone finds work now.
                        watching = false;
                        continue;
                    }
                },
                _ = tick.tick() => Change::Missed,
            };
            let Some(engine) = weak.upgrade() else { return };
            if engine.is_shut_down() {
                return;
            }
            engine.changed();
            match change {
                Change::Instance(id) => engine.wake(&id),
                // Its runner goes on with it; waiting clients were told above.
                Change::Stepped(_) => {}
                _ => {
                    if let Err(e) = engine.resume_all() {
                        tracing::warn!("cannot claim instances: {e}");
                    }
                    engine.timer_wake.notify_one();
                }
            }
        }
    });
    lock(&engine.tasks).push(task);
    Ok(())
}
