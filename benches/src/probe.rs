//! The resume measurement's instrument: the loop's activity looks here to know whether this
//! process builds a history (stop at step K) or resumes one (time steps K+1 and K+2).
//!
//! Both engines call [`on_step`] from the activity of their loop, so the same points are timed.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What this process does with the loop.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Build a history: the activity of loop index `stop_at` (the (K+1)-th call) signals and
    /// never returns, so the last checkpoint is "K steps completed, call K+1 in flight".
    Build { stop_at: u64 },
    /// Resume: note when the activity of index `first` (in flight at the crash) starts again,
    /// and when the one after it starts — that needs a new orchestration step, checkpointed.
    Resume { first: u64 },
}

struct Probe {
    mode: Mode,
    t0: Instant,
    first: OnceLock<Duration>,
    next: OnceLock<Duration>,
    done: Notify,
}

static PROBE: OnceLock<Probe> = OnceLock::new();

/// Arms the probe and starts its clock; call it right before opening the engine.
pub fn install(mode: Mode) {
    let _ = PROBE.set(Probe {
        mode,
        t0: Instant::now(),
        first: OnceLock::new(),
        next: OnceLock::new(),
        done: Notify::new(),
    });
}

/// Time since [`install`].
pub fn elapsed() -> Duration {
    PROBE.get().map(|p| p.t0.elapsed()).unwrap_or_default()
}

/// Called by the loop's activity with the loop index. Never returns at the stop index of a
/// build, nor at the second timed index of a resume (the process ends there).
pub fn on_step(i: u64) -> impl Future<Output = ()> + Send + 'static {
    let park = match PROBE.get() {
        None => false,
        Some(p) => match p.mode {
            Mode::Build { stop_at } if i == stop_at => {
                p.done.notify_one();
                true
            }
            Mode::Build { .. } => false,
            Mode::Resume { first } if i == first => {
                let _ = p.first.set(p.t0.elapsed());
                false
            }
            Mode::Resume { first } if i == first + 1 => {
                let _ = p.next.set(p.t0.elapsed());
                p.done.notify_one();
                true
            }
            Mode::Resume { .. } => false,
        },
    };
    async move {
        if park {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits until the build reached its stop index, or the resume its second timed index.
pub async fn done() {
    if let Some(p) = PROBE.get() {
        p.done.notified().await;
    }
}

/// Times of the resume: (activity K+1 started, activity K+2 started), since [`install`].
pub fn resume_times() -> (Duration, Duration) {
    PROBE
        .get()
        .map(|p| {
            (p.first.get().copied().unwrap_or_default(), p.next.get().copied().unwrap_or_default())
        })
        .unwrap_or_default()
}
