//! The activity attempts of an engine that are inside a poll, so that shutdown can wait for
//! activity code that is running to reach its next `.await` (where it sees that it was
//! stopped): once `Runtime::shutdown` returns, no activity code of the runtime runs any more.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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

/// One attempt's place in [`Polls`]: what counts its polls, and what gives it up.
#[derive(Clone)]
pub(crate) struct Counting {
    polls: Arc<Polls>,
    state: Arc<AtomicU8>,
}

impl Counting {
    pub(crate) fn new(polls: &Arc<Polls>) -> Self {
        Counting { polls: polls.clone(), state: Arc::new(AtomicU8::new(IDLE)) }
    }

    /// The attempt's future (`None`: stopped), counted while it is polled.
    pub(crate) fn count<T, F: Future<Output = Option<T>>>(self, future: F) -> Counted<F> {
        Counted { polls: self.polls, state: self.state, future: Box::pin(future) }
    }

    /// The engine gave the attempt up (its result came, it timed out, its branch was dropped):
    /// shutdown will not wait for what it may still run. Given up by shutdown itself (the
    /// engine is closing), it stays counted: shutdown waits for it.
    pub(crate) fn give_up(&self) {
        if !self.polls.closing.load(Ordering::SeqCst)
            && self.state.swap(ABANDONED, Ordering::SeqCst) == COUNTED
        {
            self.polls.inside.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// An attempt's future, counted in [`Polls`] while it is polled. Its output is `None` when it
/// was stopped; so it is, without a poll of the attempt, once the engine closes.
pub(crate) struct Counted<F> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    /// A counted future that blocks its thread in its first poll until `release` is set.
    fn blocking(counting: Counting, release: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let entered = Arc::new(AtomicBool::new(false));
        let seen = entered.clone();
        let handle = std::thread::spawn(move || {
            let future = counting.count(async move {
                seen.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Some(())
            });
            runtime().block_on(future);
        });
        while !entered.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        handle
    }

    #[test]
    fn settle_waits_for_a_poll_in_progress_and_not_for_one_given_up() {
        let polls = Arc::new(Polls::default());
        let rt = runtime();
        assert!(rt.block_on(polls.settle(Duration::ZERO)), "nothing inside: settled at once");

        let release = Arc::new(AtomicBool::new(false));
        let held = blocking(Counting::new(&polls), release.clone());
        polls.close();
        assert!(!rt.block_on(polls.settle(Duration::from_millis(50))), "a poll is in progress");
        release.store(true, Ordering::SeqCst);
        held.join().unwrap();
        assert!(rt.block_on(polls.settle(Duration::from_secs(5))), "the poll ended");

        let polls = Arc::new(Polls::default());
        let counting = Counting::new(&polls);
        let release = Arc::new(AtomicBool::new(false));
        let held = blocking(counting.clone(), release.clone());
        counting.give_up();
        polls.close();
        assert!(rt.block_on(polls.settle(Duration::ZERO)), "given up before: not waited for");
        release.store(true, Ordering::SeqCst);
        held.join().unwrap();
        assert!(rt.block_on(polls.settle(Duration::ZERO)), "counted out once only");
    }

    #[test]
    fn once_closed_an_attempt_stops_without_being_polled() {
        let polls = Arc::new(Polls::default());
        polls.close();
        let polled = Arc::new(AtomicBool::new(false));
        let seen = polled.clone();
        let out = runtime().block_on(Counting::new(&polls).count(async move {
            seen.store(true, Ordering::SeqCst);
            Some(1)
        }));
        assert_eq!(out, None);
        assert!(!polled.load(Ordering::SeqCst));
        assert_eq!(polls.inside.load(Ordering::SeqCst), 0);
    }
}
