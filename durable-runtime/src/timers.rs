//! The timer task: wakes instances whose timer, event timeout or retry backoff came due, from
//! the store's timer index, sleeping on the runtime's clock until the next entry is due.

use std::sync::Arc;

use crate::engine::{Engine, lock};
use crate::error::unless_panics;
use crate::records::TIMER_RETRY_MS;

/// Starts the timer task of `engine`; it ends when the engine is dropped or shut down.
pub(crate) fn start(engine: &Arc<Engine>) {
    let weak = Arc::downgrade(engine);
    let task = tokio::spawn(async move {
        loop {
            let Some(engine) = weak.upgrade() else { return };
            let now = engine.clock.now_ms();
            let (due, next) = unless_panics(|| engine.records.take_due(now)).unwrap_or_else(|p| {
                tracing::error!("reading the timer index panicked, trying again in 1 s: {p}");
                (Vec::new(), Some(now.saturating_add(TIMER_RETRY_MS)))
            });
            let more = !due.is_empty();
            for id in due {
                engine.wake(&id);
            }
            if more {
                continue;
            }
            let clock = engine.clock.clone();
            let wake = engine.timer_wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            match next {
                Some(at) => {
                    tokio::select! {
                        () = clock.sleep_until(at) => {}
                        () = &mut wake => {}
                    }
                }
                None => wake.await,
            }
        }
    });
    lock(&engine.tasks).push(task);
}
