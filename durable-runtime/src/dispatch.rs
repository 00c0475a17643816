//! Activity dispatch: each attempt of an activity call runs as a task of the code pool (or of
//! tokio, without isolation), with its timeout on the runtime's clock, and reports its result to
//! the driver.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::activity::ActivityContext;
use crate::clock::ms;
use crate::engine::Engine;
use crate::error::panic_message;
use crate::ids::branch_key;
use crate::op::{ActivityFailure, RetryPolicy};
use crate::polls::Counting;
use crate::pool::{Pool, Spawned};

/// What an activity task reports to its driver: the step key, the branch, the result.
pub(crate) type Finished = (String, usize, Result<Vec<u8>, ActivityFailure>);

/// One attempt of an activity call: operation `branch` of the step `step_key`.
#[derive(Clone, Copy)]
pub(crate) struct Attempt<'a> {
    pub name: &'a str,
    pub input: &'a [u8],
    pub policy: &'a RetryPolicy,
    pub step_key: &'a str,
    pub branch: usize,
    pub attempt: u32,
}

/// An activity attempt: dropping it aborts its task and, at once, tells the thread that runs
/// the activity to stop (an async activity stops at its next `.await`).
pub(crate) struct AbortOnDrop {
    task: Spawned,
    _stop: tokio::sync::oneshot::Sender<()>,
    counting: Counting,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.counting.give_up();
        self.task.abort();
    }
}

/// Starts an attempt of the activity call `attempt` on its own task; its result goes to `tx`.
pub(crate) fn spawn_attempt(
    engine: &Engine,
    id: &str,
    attempt: &Attempt<'_>,
    tx: mpsc::UnboundedSender<Finished>,
) -> AbortOnDrop {
    let Attempt { name, input, policy, step_key, branch, attempt } = *attempt;
    let activity = engine.registered.activity(name);
    let idempotency_key = branch_key(step_key, branch);
    let step_key = step_key.to_owned();
    let ctx = activity.as_ref().map(|(n, _)| ActivityContext {
        instance_id: id.to_owned(),
        idempotency_key,
        attempt,
        name: n,
        permanent: Arc::default(),
    });
    metrics::counter!("durable_activity_attempts_total", "activity" => name.to_owned())
        .increment(1);
    let fut = activity.zip(ctx).map(|((_, act), ctx)| act.invoke(ctx, input));
    let name = name.to_owned();
    let timeout = policy.attempt_timeout;
    // The attempt's deadline on the runtime's clock (a manual clock drives it, as it drives
    // timers and backoffs).
    let clock = engine.clock.clone();
    let deadline = timeout.map(|limit| clock.now_ms().saturating_add(ms(limit)));
    let span = tracing::info_span!("activity", name = %name, attempt);
    let pool = engine.pool.as_ref().map(Pool::runner);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let counting = Counting::new(&engine.attempt_polls);
    let counted = counting.clone();
    let handle = engine.spawn(
        async move {
            let result = match fut {
                None => Err(ActivityFailure::NotRegistered(name)),
                Some(fut) => {
                    // The attempt is a task of its own, so an activity that blocks its thread
                    // stalls only itself (the code pool adds a thread for the others): its
                    // timeout is enforced from here and fires on time. When the driver drops
                    // the attempt (its result arrived, the branch is abandoned, the runtime
                    // shuts down), `stop` is dropped: an async activity stops at its next
                    // `.await`; a blocking one runs on until it returns, unheard. Without
                    // isolation it is a tokio task.
                    // Counted while polled, the check of the stop included: shutdown waits for a
                    // poll that began before the stop (see `Polls`).
                    let attempt = counted.count(async move {
                        tokio::select! {
                            biased;
                            _ = stopped => None,
                            r = fut => Some(r),
                        }
                    });
                    let inner: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match pool {
                        Some(pool) => Box::pin(pool.run(attempt)),
                        None => {
                            let task = tokio::spawn(attempt);
                            Box::pin(async move {
                                task.await.map_err(|e| -> Box<dyn std::any::Any + Send> {
                                    if e.is_panic() {
                                        e.into_panic()
                                    } else {
                                        Box::new(format!("activity task ended: {e}"))
                                    }
                                })
                            })
                        }
                    };
                    let joined = match deadline {
                        None => Some(inner.await),
                        Some(at) => tokio::select! {
                            biased;
                            r = inner => Some(r),
                            () = clock.sleep_until(at) => None,
                        },
                    };
                    match joined {
                        None => Err(ActivityFailure::TimedOut(timeout.unwrap_or_default())),
                        Some(Ok(Some(r))) => r,
                        // Stopped: its driver dropped it, or the engine is shutting down and
                        // its driver is about to stop. Nothing to report (a failure here would
                        // be recorded against a call that did not fail).
                        Some(Ok(None)) => return,
                        Some(Err(panic)) => {
                            Err(ActivityFailure::Panicked(panic_message(panic.as_ref())))
                        }
                    }
                }
            };
            let _ = tx.send((step_key, branch, result));
        }
        .instrument(span),
    );
    AbortOnDrop { task: handle, _stop: stop, counting }
}

/// Whether a failed attempt may be retried (within the policy's attempts).
pub(crate) fn retryable(failure: &ActivityFailure) -> bool {
    !matches!(
        failure,
        ActivityFailure::NotRegistered(_) | ActivityFailure::Error { permanent: true, .. }
    )
}
