//! Activity dispatch: each attempt of an activity call runs as a task of the code pool (or of
//! tokio, without isolation), with its timeout on the runtime's clock, and reports its result to
//! the driver.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::activity::ActivityContext;
use crate::clock::ms;
use crate::engine::Engine;
use crate::error::panic_message;
use crate::ids::branch_key;
use crate::op::{ActivityFailure, RetryPolicy};
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

/// How long [`Polls::settle`] waits for activity code that is running when a runtime shuts
/// down: an async activity is back at its next `.await` within microseconds; code that blocks
/// its thread for longer than this runs on, unheard.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);

/// The activity attempts of one engine that are inside a poll right now, so that shutdown can
/// wait for activity code that is running to reach its next `.await`. An attempt abandoned
/// before (its result came, it timed out, its branch was dropped) is not counted: blocking code
/// left running by a timeout does not hold shutdowns up.
#[derive(Debug, Default)]
pub(crate) struct Polls {
    inside: AtomicUsize,
    /// Set by shutdown before it stops the drivers: an attempt polled afterwards stops without
    /// running activity code (the stop it would see may not be dropped yet, for an attempt
    /// whose driver was already leaving when shutdown began).
    closing: AtomicBool,
}

impl Polls {
    /// From now on, no attempt runs activity code at its next poll.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Waits until no attempt that was not abandoned is inside a poll, or `limit` passed;
    /// `false` on the latter. Call it after [`close`](Self::close): a poll that begins later
    /// sees it before any activity code runs. Not from inside an activity (it waits for
    /// itself).
    pub(crate) async fn settle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.inside.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            // Real time, not the runtime's clock: a manual clock does not drive this wait.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }
}

/// Where one attempt stands for [`Polls`]; exactly one of the poll's end and the abandonment
/// takes an attempt that is counted out of the count.
const IDLE: u8 = 0;
const COUNTED: u8 = 1;
const ABANDONED: u8 = 2;

/// An attempt's future, counted in [`Polls`] while it is polled. Its output is `None` when it
/// was stopped; so it is, without a poll of the attempt, once the engine closes.
struct Counted<F> {
    polls: Arc<Polls>,
    state: Arc<AtomicU8>,
    future: Pin<Box<F>>,
}

impl<T, F: Future<Output = Option<T>>> Future for Counted<F> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        /// Ends the count however the poll ends (a panicking activity unwinds through it).
        struct Inside<'a>(&'a Polls, &'a AtomicU8);
        impl Drop for Inside<'_> {
            fn drop(&mut self) {
                if self
                    .1
                    .compare_exchange(COUNTED, IDLE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    self.0.inside.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        let this = self.get_mut();
        // Counted first, then `closing` read (both SeqCst, as shutdown's store of `closing`
        // and its reads of the count): either this poll sees `closing`, or shutdown sees it
        // counted and waits for it.
        this.polls.inside.fetch_add(1, Ordering::SeqCst);
        let counted =
            this.state.compare_exchange(IDLE, COUNTED, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if !counted {
            this.polls.inside.fetch_sub(1, Ordering::SeqCst);
        }
        let _inside = Inside(&this.polls, &this.state);
        if this.polls.closing.load(Ordering::SeqCst) {
            return Poll::Ready(None);
        }
        this.future.as_mut().poll(cx)
    }
}

/// An activity attempt: dropping it aborts its task and, at once, tells the thread that runs
/// the activity to stop (an async activity stops at its next `.await`).
pub(crate) struct AbortOnDrop {
    task: Spawned,
    _stop: tokio::sync::oneshot::Sender<()>,
    polls: Arc<Polls>,
    state: Arc<AtomicU8>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        // Dropped while the engine runs: shutdown will not wait for what the attempt may still
        // run (blocking code that timed out). Dropped by shutdown: it waits.
        if !self.polls.closing.load(Ordering::SeqCst)
            && self.state.swap(ABANDONED, Ordering::SeqCst) == COUNTED
        {
            self.polls.inside.fetch_sub(1, Ordering::SeqCst);
        }
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
    let polls = engine.attempt_polls.clone();
    let state = Arc::new(AtomicU8::new(IDLE));
    let (counted_polls, counted_state) = (polls.clone(), state.clone());
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
                    let attempt = Counted {
                        polls: counted_polls,
                        state: counted_state,
                        future: Box::pin(async move {
                            tokio::select! {
                                biased;
                                _ = stopped => None,
                                r = fut => Some(r),
                            }
                        }),
                    };
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
    AbortOnDrop { task: handle, _stop: stop, polls, state }
}

/// Whether a failed attempt may be retried (within the policy's attempts).
pub(crate) fn retryable(failure: &ActivityFailure) -> bool {
    !matches!(
        failure,
        ActivityFailure::NotRegistered(_) | ActivityFailure::Error { permanent: true, .. }
    )
}
