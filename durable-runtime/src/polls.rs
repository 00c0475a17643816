//! The activity attempts of an engine that are inside a poll, so that shutdown can wait for
//! activity code that is running to reach its next `.await` (where it sees that it was
//! stopped): once `Runtime::shutdown` returns, no activity code of the runtime runs any more.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

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
    /// Where [`settle`](Polls::settle) sleeps; woken when the count, once closing, reaches zero.
    settled: Mutex<()>,
    zero: Condvar,
}

impl Polls {
    /// From now on, no attempt runs activity code at its next poll.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Waits until no attempt that was not abandoned is inside a poll, or `limit` passed;
    /// `false` on the latter. Call it after [`close`](Self::close): a poll that begins later
    /// sees it before any activity code runs. Not from inside an activity (it waits for
    /// itself). The wait is in real time on a blocking thread, woken when the last poll ends:
    /// a manual or paused clock neither drives nor spins it.
    pub(crate) async fn settle(self: &Arc<Self>, limit: Duration) -> bool {
        if self.inside.load(Ordering::SeqCst) == 0 {
            return true;
        }
        let polls = self.clone();
        tokio::task::spawn_blocking(move || polls.wait(limit)).await.unwrap_or(false)
    }

    /// [`settle`](Self::settle) on the caller's thread.
    fn wait(&self, limit: Duration) -> bool {
        let guard = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        let (_guard, waited) = self
            .zero
            .wait_timeout_while(guard, limit, |()| self.inside.load(Ordering::SeqCst) > 0)
            .unwrap_or_else(|p| p.into_inner());
        !waited.timed_out() || self.inside.load(Ordering::SeqCst) == 0
    }

    /// Counts one attempt out of the count; the last one out, once closing, wakes `settle`.
    fn count_out(&self) {
        // SeqCst as `close` and `settle`'s reads: a count out that reads `closing` as unset
        // came before `close`, so `settle`, called after it, sees the count without it.
        if self.inside.fetch_sub(1, Ordering::SeqCst) == 1 && self.closing.load(Ordering::SeqCst) {
            drop(self.settled.lock().unwrap_or_else(|p| p.into_inner()));
            self.zero.notify_all();
        }
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
            self.polls.count_out();
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
                    self.0.count_out();
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
            this.polls.count_out();
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

    /// This thread's CPU time so far, in clock ticks (Linux).
    fn thread_cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // After the command's closing parenthesis: state is field 3; utime, stime 14 and 15.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    #[test]
    fn under_a_paused_clock_settle_sleeps_in_real_time() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let polls = Arc::new(Polls::default());
        let release = Arc::new(AtomicBool::new(false));
        let held = blocking(Counting::new(&polls), release.clone());
        polls.close();

        let (began, cpu) = (std::time::Instant::now(), thread_cpu_ticks());
        assert!(!rt.block_on(polls.settle(Duration::from_millis(300))), "still inside");
        assert!(began.elapsed() >= Duration::from_millis(300), "the limit is real time");
        // A wait that spun on the paused clock would burn the whole 300 ms (30 ticks).
        assert!(thread_cpu_ticks() - cpu < 10, "settle spun while it waited");

        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            release.store(true, Ordering::SeqCst);
        });
        assert!(rt.block_on(polls.settle(Duration::from_secs(30))), "the poll ended");
        assert!(began.elapsed() < Duration::from_secs(30), "woken when it ended");
        releaser.join().unwrap();
        held.join().unwrap();
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
