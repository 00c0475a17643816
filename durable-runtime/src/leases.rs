//! The lease keeper of a worker on a shared store: a thread of its own that renews, a few times
//! per lease, the leases of every instance this process runs, in one store call.
//!
//! A driver's lease is also extended by each of its checkpoints and, while activities run, by
//! the driver itself. Neither happens while the driver waits for anything else: its step's code
//! on the blocking pool, a store call, a turn on a tokio worker that sync store calls of other
//! drivers keep busy. A driver that went a lease without either lost its instance to another
//! worker, which then ran the same step and activities again. The keeper renews on its own OS
//! thread, so a busy tokio runtime does not delay it; it never takes a lease (a lease the
//! process no longer holds stays lost, and its driver finds out at its next write). It renews
//! in wall-clock time, measured on the runtime's clock.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::engine::Engine;

/// How often the keeper looks whether the engine is gone or shut down, at most.
const LOOK_MS: u64 = 100;

/// Starts the keeper of `engine`'s leases: renews every third of the lease until the engine is
/// dropped or shut down. A store that cannot renew in bulk ([`Store::renew`]'s default) makes
/// it renew nothing.
///
/// [`Store::renew`]: crate::store::Store::renew
pub(crate) fn start(engine: &Arc<Engine>) -> std::io::Result<()> {
    let every = Duration::from_millis((engine.records.lease_ms() / 3).max(1));
    let weak = Arc::downgrade(engine);
    std::thread::Builder::new().name("durable-leases".into()).spawn(move || keep(&weak, every))?;
    Ok(())
}

fn keep(engine: &Weak<Engine>, every: Duration) {
    let look = Duration::from_millis(LOOK_MS).min(every);
    let mut waited = Duration::ZERO;
    loop {
        std::thread::sleep(look);
        waited += look;
        let Some(engine) = engine.upgrade() else { return };
        if engine.is_shut_down() {
            return;
        }
        if waited < every {
            continue;
        }
        waited = Duration::ZERO;
        let ids = engine.driven();
        if ids.is_empty() {
            continue;
        }
        let kept =
            crate::error::unless_panics(|| engine.records.renew(&ids, engine.clock.now_ms()));
        match kept {
            Ok(Ok(renewed)) if renewed < ids.len() => tracing::debug!(
                "renewed {renewed} of the {} leases this process runs; the others \
                 ended or were taken over",
                ids.len()
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("cannot renew the leases of this process: {e}"),
            Err(p) => tracing::error!("renewing the leases of this process panicked: {p}"),
        }
    }
}
