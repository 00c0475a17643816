//! The code pool: the threads that run instances' drivers, their steps and their activity
//! attempts when code is isolated ([`RuntimeBuilder::isolate_code`](crate::RuntimeBuilder::isolate_code)).
//!
//! A step that computes without awaiting, or an activity that blocks its thread, must stall only
//! itself. Running each step and attempt on tokio's blocking pool gives that, at the price of a
//! wake-up of a parked thread at every hand-over (driver → step → driver → attempt → driver):
//! on the benchmark machine most of a step's CPU. Here the driver, its step and its attempts are
//! tasks of one small pool instead. A task woken from a thread of the pool goes to the front of
//! the queue that this thread takes its next task from, and nobody is woken: a step's chain of
//! hand-overs runs on one thread without a system call. A thread that code holds (it stays in
//! one poll longer than [`STUCK`]) is compensated: a watchdog adds a thread while tasks wait and
//! fewer than the base number of threads are free of such code, and a thread beyond that number
//! leaves when it is between tasks.
//!
//! Tasks run inside the context of the tokio runtime that opened the durable runtime, so
//! tokio's timers, channels and I/O work in them; when that runtime shuts down, so does the
//! pool (a task of it holds the pool's close guard).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// How long a thread may stay in one poll before the watchdog counts it as held by code: well
/// above a store's occasional stall (a sled reopen pauses 10–22 ms, a loaded disk's sync as
/// much), so that those do not add threads. A thread added and gone again costs memory: glibc
/// gives a new thread an arena of its own, which keeps what it freed (100,000 instances started
/// and parked with a threshold of 10 ms: 50 threads added, 154 MB resident against 70 MB).
const STUCK: Duration = Duration::from_millis(100);
/// How often the watchdog looks while the pool has work.
const TICK: Duration = Duration::from_millis(5);
/// How long a thread waits for work before it looks again whether it is spare (one more than
/// the base number of threads that code does not hold): a spare thread leaves.
const RETIRE: Duration = Duration::from_secs(2);
/// The most threads the pool grows to (tokio's blocking pool has the same default).
const MAX_THREADS: usize = 512;
/// The queue length from which [`Pool::room`] makes its callers wait, until the queue is half
/// as long.
const BACKLOG: usize = 256;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A pool of threads for code; see the module documentation. Closed when dropped.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Threads without a task wait here.
    work: Condvar,
    /// The watchdog waits here while the pool has nothing to do.
    watch: Condvar,
    handle: tokio::runtime::Handle,
    base: usize,
    epoch: Instant,
    /// Every task not yet ended, by number: what a closing pool drops.
    live: Mutex<HashMap<u64, Weak<Task>>>,
    numbers: AtomicU64,
    /// Told when the queue, long before, is down to half of [`BACKLOG`] (or the pool closed).
    drained: tokio::sync::Notify,
}

struct Queue {
    tasks: VecDeque<Arc<Task>>,
    /// One stamp per live thread: when it began its present poll (µs since `epoch`, plus one),
    /// 0 between polls.
    stamps: Vec<Arc<AtomicU64>>,
    idle: usize,
    closed: bool,
    watchdog_waits: bool,
}

/// How many hand-overs in a row a thread keeps for itself (front of the queue) before one goes
/// to the back, behind what waits (tokio's LIFO slot has the same bound).
const FRONT_STREAK: u32 = 3;

thread_local! {
    /// The pool whose thread this is, if any.
    static HOME: std::cell::RefCell<Weak<Shared>> = const { std::cell::RefCell::new(Weak::new()) };
    /// Hand-overs this thread put in front since its last one to the back.
    static STREAK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic never happens while the queue is held (tasks run outside it).
    queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pool {
    /// Starts a pool of `base` threads (at least one) and its watchdog, running tasks in the
    /// context of the tokio runtime of `handle`.
    pub(crate) fn start(handle: tokio::runtime::Handle, base: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                tasks: VecDeque::new(),
                stamps: Vec::new(),
                idle: 0,
                closed: false,
                watchdog_waits: false,
            }),
            work: Condvar::new(),
            watch: Condvar::new(),
            handle,
            base: base.max(1),
            epoch: Instant::now(),
            live: Mutex::new(HashMap::new()),
            numbers: AtomicU64::new(0),
            drained: tokio::sync::Notify::new(),
        });
        let pool = Pool { shared };
        for _ in 0..pool.shared.base {
            pool.shared.add_thread()?;
        }
        let weak = Arc::downgrade(&pool.shared);
        std::thread::Builder::new()
            .name("durable-code-watch".into())
            .spawn(move || watchdog(&weak))?;
        // When the tokio runtime shuts down it drops this task, and the pool closes with it:
        // its tasks could not use tokio's timers any more.
        let guard = CloseOnDrop(Arc::downgrade(&pool.shared));
        pool.shared.handle.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        Ok(pool)
    }

    /// Waits while the pool's queue is [`BACKLOG`] tasks long or more, until it is half as long:
    /// what feeds the pool from outside (clients starting instances) goes no faster than the
    /// pool runs them, so that a burst of starts does not pile up drivers in memory.
    pub(crate) async fn room(&self) {
        loop {
            let drained = self.shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let q = lock(&self.shared.queue);
                if q.closed || q.tasks.len() < BACKLOG {
                    return;
                }
            }
            drained.await;
        }
    }

    /// A handle that spawns on this pool, for tasks that spawn others.
    pub(crate) fn runner(&self) -> Runner {
        Runner(self.shared.clone())
    }

    /// Runs `future` on the pool; the handle ends it or tells whether it ended.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) -> JoinHandle {
        spawn(&self.shared, future)
    }

    /// Runs `future` on the pool; see [`Runner::run`].
    pub(crate) fn run<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        future: F,
    ) -> impl Future<Output = std::thread::Result<T>> + Send + 'static + use<T, F> {
        run(&self.shared, future)
    }
}

/// Spawns on a pool without keeping it open: a closed pool drops what it is given.
#[derive(Clone)]
pub(crate) struct Runner(Arc<Shared>);

impl Runner {
    /// Runs `future` on the pool and gives its output, or the payload of its panic. Dropping
    /// the returned future leaves the task running.
    pub(crate) fn run<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        future: F,
    ) -> impl Future<Output = std::thread::Result<T>> + Send + 'static + use<T, F> {
        run(&self.0, future)
    }
}

fn spawn(shared: &Arc<Shared>, future: impl Future<Output = ()> + Send + 'static) -> JoinHandle {
    let (done, finished) = tokio::sync::oneshot::channel();
    let number = shared.numbers.fetch_add(1, Ordering::Relaxed);
    let task = Arc::new(Task {
        number,
        state: AtomicU8::new(SCHEDULED),
        aborted: AtomicBool::new(false),
        future: Mutex::new(Some(Box::pin(future))),
        done: Mutex::new(Some(done)),
        pool: Arc::downgrade(shared),
    });
    lock_live(&shared.live).insert(number, Arc::downgrade(&task));
    if !shared.push(task.clone()) {
        // Like a spawn on a runtime that shut down: the future is dropped at once.
        task.discard();
    }
    JoinHandle { task, finished }
}

fn run<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
    shared: &Arc<Shared>,
    future: F,
) -> impl Future<Output = std::thread::Result<T>> + Send + 'static + use<T, F> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut future = Box::pin(future);
    drop(spawn(shared, async move {
        let out = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                Ok(Poll::Pending) => Poll::Pending,
                Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
                Err(panic) => Poll::Ready(Err(panic)),
            }
        })
        .await;
        let _ = tx.send(out);
    }));
    async move {
        rx.await.unwrap_or_else(|_| {
            Err(Box::new("the code pool closed before the task ended".to_owned()))
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.close();
    }
}

struct CloseOnDrop(Weak<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.close();
        }
    }
}

impl Shared {
    fn now_stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Queues a scheduled task; `false` when the pool is closed (the caller, which holds the
    /// task's turn, drops its future). From a thread of this pool it goes first and wakes
    /// nobody (this thread takes it after its present poll) unless more work waits, but not
    /// more than [`FRONT_STREAK`] times in a row; from elsewhere it goes last and wakes a free
    /// thread.
    fn push(self: &Arc<Self>, task: Arc<Task>) -> bool {
        let home = HOME.with(|h| std::ptr::eq(h.borrow().as_ptr(), Arc::as_ptr(self)));
        let front = home
            && STREAK.with(|streak| {
                let front = streak.get() < FRONT_STREAK;
                streak.set(if front { streak.get() + 1 } else { 0 });
                front
            });
        let mut q = lock(&self.queue);
        if q.closed {
            return false;
        }
        if front {
            q.tasks.push_front(task);
        } else {
            q.tasks.push_back(task);
        }
        let wake = q.idle > 0 && (!home || q.tasks.len() > 1);
        let watchdog = q.watchdog_waits;
        drop(q);
        if wake {
            self.work.notify_one();
        }
        if watchdog {
            self.watch.notify_one();
        }
        true
    }

    /// Closes the pool: every task's future is dropped, here or, for a task being polled, by
    /// the thread polling it once the poll returns; its threads leave.
    fn close(&self) {
        let queued = {
            let mut q = lock(&self.queue);
            q.closed = true;
            std::mem::take(&mut q.tasks)
        };
        self.work.notify_all();
        self.watch.notify_all();
        self.drained.notify_waiters();
        // Queued tasks are scheduled: their turn is this thread's.
        for task in queued {
            task.discard();
        }
        let live: Vec<Arc<Task>> =
            lock_live(&self.live).values().filter_map(Weak::upgrade).collect();
        for task in live {
            task.abort();
        }
    }

    fn add_thread(self: &Arc<Self>) -> std::io::Result<()> {
        let stamp = Arc::new(AtomicU64::new(0));
        lock(&self.queue).stamps.push(stamp.clone());
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("durable-code".into())
            .spawn(move || worker(&weak, &stamp));
        if spawned.is_err() {
            let mut q = lock(&self.queue);
            let last = q.stamps.len() - 1;
            q.stamps.remove(last);
        }
        spawned.map(drop)
    }

    /// How many threads are in a poll begun more than [`STUCK`] ago (code holds them).
    fn stuck(&self, q: &Queue) -> usize {
        let now = self.now_stamp();
        let limit = u64::try_from(STUCK.as_micros()).unwrap_or(u64::MAX);
        q.stamps
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .filter(|&since| since != 0 && now.saturating_sub(since) > limit)
            .count()
    }

    /// The next task for a thread of the pool; `None` when the thread is to leave.
    fn next(&self, stamp: &Arc<AtomicU64>) -> Option<Arc<Task>> {
        let mut q = lock(&self.queue);
        loop {
            // Threads that code holds do not count: the pool keeps `base` others, and one more
            // than that leaves as soon as it is between tasks (a thread added while code held
            // others is not kept once they are back, whatever the load).
            let spare = |q: &Queue| q.stamps.len() - self.stuck(q) > self.base;
            if q.closed || spare(&q) {
                break;
            }
            if let Some(task) = q.tasks.pop_front() {
                stamp.store(self.now_stamp(), Ordering::Release);
                if q.tasks.len() == BACKLOG / 2 {
                    self.drained.notify_waiters();
                }
                return Some(task);
            }
            q.idle += 1;
            // A thread that became spare while it waited looks again after `RETIRE`.
            q = self
                .work
                .wait_timeout(q, RETIRE)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            q.idle -= 1;
        }
        q.stamps.retain(|s| !Arc::ptr_eq(s, stamp));
        None
    }
}

/// Whether this is a thread of a code pool.
pub(crate) fn on_pool_thread() -> bool {
    HOME.with(|h| h.borrow().strong_count() > 0)
}

/// Whether this is a thread of a code pool whose queue is empty: blocking it (a flush) delays
/// no task.
pub(crate) fn idle_here() -> bool {
    HOME.with(|h| h.borrow().upgrade()).is_some_and(|pool| lock(&pool.queue).tasks.is_empty())
}

fn lock_live(live: &Mutex<HashMap<u64, Weak<Task>>>) -> MutexGuard<'_, HashMap<u64, Weak<Task>>> {
    live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn worker(shared: &Weak<Shared>, stamp: &Arc<AtomicU64>) {
    let Some(pool) = shared.upgrade() else { return };
    let _runtime = pool.handle.enter();
    HOME.with(|h| *h.borrow_mut() = shared.clone());
    drop(pool);
    loop {
        let Some(pool) = shared.upgrade() else { return };
        let Some(task) = pool.next(stamp) else { return };
        drop(pool);
        task.run();
        stamp.store(0, Ordering::Release);
    }
}

/// Keeps the pool's threads free for work: while tasks wait and code holds threads (one poll
/// longer than [`STUCK`]), it wakes a free thread, or adds one until `base` threads are not
/// held.
fn watchdog(shared: &Weak<Shared>) {
    loop {
        let Some(pool) = shared.upgrade() else { return };
        let mut q = lock(&pool.queue);
        if q.closed {
            return;
        }
        let busy = q.stamps.iter().any(|s| s.load(Ordering::Acquire) != 0);
        if q.tasks.is_empty() && !busy {
            q.watchdog_waits = true;
            let mut q = pool.watch.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
            q.watchdog_waits = false;
            continue;
        }
        let stuck = pool.stuck(&q);
        let waiting = stuck > 0 && !q.tasks.is_empty();
        // A task queued by a thread that code then held waits for nobody: a free thread takes
        // it, or a new one.
        let nudge = waiting && q.idle > 0;
        let grow = waiting
            && q.idle == 0
            && q.stamps.len() - stuck < pool.base
            && q.stamps.len() < MAX_THREADS;
        drop(q);
        if nudge {
            pool.work.notify_all();
        }
        if grow {
            tracing::debug!("code holds the threads of the pool while tasks wait: adding one");
            if let Err(e) = pool.add_thread() {
                tracing::error!("the code pool could not add a thread: {e}");
            }
        }
        drop(pool);
        std::thread::sleep(TICK);
    }
}

const IDLE: u8 = 0;
/// Queued, or about to be: the holder of this state owns the task's next turn.
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
/// Woken while it ran: queued again after the poll.
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

struct Task {
    number: u64,
    state: AtomicU8,
    aborted: AtomicBool,
    future: Mutex<Option<BoxFuture>>,
    /// Dropped when the task ends, which ends the wait of its [`JoinHandle`].
    done: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    pool: Weak<Shared>,
}

impl Task {
    fn schedule(self: &Arc<Self>) {
        // SeqCst here, in `abort` and in `run`: an abort stored before this load is seen by
        // the poll that follows, or this load sees that poll running and notifies it.
        let mut state = self.state.load(Ordering::SeqCst);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return,
            };
            match self.state.compare_exchange_weak(state, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) if next == SCHEDULED => {
                    let queued = self.pool.upgrade().is_some_and(|pool| pool.push(self.clone()));
                    if !queued {
                        self.discard();
                    }
                    return;
                }
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }

    /// Ends the task at its next turn (now, if it is idle): its future is dropped, not polled.
    fn abort(self: &Arc<Self>) {
        self.aborted.store(true, Ordering::SeqCst);
        self.schedule();
    }

    /// Polls the task once (it was taken from the queue, so it is `SCHEDULED`).
    fn run(self: Arc<Self>) {
        self.state.store(RUNNING, Ordering::SeqCst);
        let mut slot = self.future.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ended = match slot.as_mut() {
            None => true,
            Some(_) if self.aborted.load(Ordering::SeqCst) => true,
            Some(future) => {
                let waker = Waker::from(self.clone());
                let mut cx = Context::from_waker(&waker);
                // A panic ends the task (a driver's panic is its own; the pool goes on).
                !matches!(
                    std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))),
                    Ok(Poll::Pending)
                )
            }
        };
        if ended {
            let future = slot.take();
            drop(slot);
            self.end(future);
            return;
        }
        drop(slot);
        if self.state.compare_exchange(RUNNING, IDLE, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            // Woken while it ran: it goes to the back, behind what waited meanwhile.
            self.state.store(SCHEDULED, Ordering::SeqCst);
            let queued = self.pool.upgrade().is_some_and(|pool| {
                let mut q = lock(&pool.queue);
                if !q.closed {
                    q.tasks.push_back(self.clone());
                }
                !q.closed
            });
            if !queued {
                self.discard();
            }
        }
    }

    /// Drops the future of a task whose turn the caller holds and that will not run again (it
    /// was aborted, or the pool closed).
    fn discard(&self) {
        let future = self.future.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.end(future);
    }

    /// Ends the task: drops its future (a panic in its drop is the task's own) and tells its
    /// handle.
    fn end(&self, future: Option<BoxFuture>) {
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(future)));
        self.state.store(DONE, Ordering::SeqCst);
        drop(self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        if let Some(pool) = self.pool.upgrade() {
            lock_live(&pool.live).remove(&self.number);
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.schedule();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
}

/// A task of the pool: whether it ended, a way to end it, and a future that is ready when it
/// ended (however: returned, panicked, aborted, or dropped by a closing pool).
pub(crate) struct JoinHandle {
    task: Arc<Task>,
    finished: tokio::sync::oneshot::Receiver<()>,
}

impl JoinHandle {
    pub(crate) fn is_finished(&self) -> bool {
        self.task.state.load(Ordering::Acquire) == DONE
    }

    /// Ends the task at its next turn: its future is dropped instead of polled.
    pub(crate) fn abort(&self) {
        self.task.abort();
    }
}

/// A task of the engine: on the code pool when code is isolated, else a tokio task.
pub(crate) enum Spawned {
    Pool(JoinHandle),
    Tokio(tokio::task::JoinHandle<()>),
}

impl Spawned {
    pub(crate) fn is_finished(&self) -> bool {
        match self {
            Spawned::Pool(h) => h.is_finished(),
            Spawned::Tokio(h) => h.is_finished(),
        }
    }

    pub(crate) fn abort(&self) {
        match self {
            Spawned::Pool(h) => h.abort(),
            Spawned::Tokio(h) => h.abort(),
        }
    }

    /// Waits until the task ended.
    pub(crate) async fn join(self) {
        match self {
            Spawned::Pool(h) => h.await,
            Spawned::Tokio(h) => drop(h.await),
        }
    }
}

impl Future for JoinHandle {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.finished).poll(cx).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(rt: &tokio::runtime::Runtime, base: usize) -> Pool {
        Pool::start(rt.handle().clone(), base).unwrap()
    }

    /// A task that holds its thread (blocking, no await) until the flag is set.
    fn hold(
        pool: &Pool,
    ) -> (Arc<AtomicBool>, impl Future<Output = std::thread::Result<()>> + use<>) {
        let release = Arc::new(AtomicBool::new(false));
        let flag = release.clone();
        let held = pool.run(async move {
            while !flag.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        (release, held)
    }

    #[test]
    fn tasks_run_and_give_their_output_or_their_panic() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = pool(&rt, 2);
        rt.block_on(async {
            assert_eq!(pool.run(async { 7 }).await.unwrap(), 7);
            let panicked = pool.run(async { panic!("boom") }).await.unwrap_err();
            assert_eq!(panicked.downcast_ref::<&str>(), Some(&"boom"));
            // The pool goes on after a panic.
            assert_eq!(pool.run(async { 8 }).await.unwrap(), 8);
        });
    }

    #[test]
    fn tasks_use_tokio_timers_and_chains_stay_on_one_thread() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = pool(&rt, 2);
        let inner = Arc::new(pool);
        let p = inner.clone();
        let (outer, first) = rt
            .block_on(inner.run(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let outer = std::thread::current().id();
                // A task spawned and awaited from the pool runs next on the same thread.
                let first = p.run(async { std::thread::current().id() }).await.unwrap();
                (outer, first)
            }))
            .unwrap();
        assert_eq!(outer, first);
    }

    #[test]
    fn threads_held_by_code_are_compensated_and_leave_when_idle() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = pool(&rt, 1);
        let (release, held) = hold(&pool);
        std::thread::sleep(STUCK * 2);
        // The only base thread is held: the next task still runs, on a thread added for it.
        let began = Instant::now();
        assert_eq!(rt.block_on(pool.run(async { 1 })).unwrap(), 1);
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(lock(&pool.shared.queue).stamps.len(), 2);
        release.store(true, Ordering::Release);
        rt.block_on(held).unwrap();
        let deadline = Instant::now() + RETIRE * 5;
        while lock(&pool.shared.queue).stamps.len() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(lock(&pool.shared.queue).stamps.len(), 1, "the added thread left");
    }

    #[test]
    fn aborted_tasks_end_and_their_handles_say_so() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = pool(&rt, 1);
        let dropped = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let flag = Flag(dropped.clone());
        let handle = pool.spawn(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        std::thread::sleep(Duration::from_millis(10));
        assert!(!handle.is_finished());
        handle.abort();
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), handle).await }).unwrap();
        assert!(dropped.load(Ordering::Acquire));
    }

    #[test]
    fn a_pool_closes_with_its_tokio_runtime() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = pool(&rt, 2);
        // A task waiting on a tokio timer is woken by the runtime's end and dropped.
        let handle = pool.spawn(async { tokio::time::sleep(Duration::from_secs(3600)).await });
        let forgotten = pool.spawn(std::future::pending());
        std::thread::sleep(Duration::from_millis(20));
        drop(rt);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(handle.is_finished(), "the sleeping task was dropped");
        assert!(lock(&pool.shared.queue).closed);
        // Nothing ever wakes the other: the closing pool dropped it too.
        assert!(forgotten.is_finished());
    }

    #[test]
    fn a_future_whose_drop_panics_still_ends_its_task() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = pool(&rt, 1);
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("drop");
            }
        }
        let handle = pool.spawn(async {
            let _bomb = Bomb;
            std::future::pending::<()>().await;
        });
        std::thread::sleep(Duration::from_millis(10));
        handle.abort();
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), handle).await }).unwrap();
        assert_eq!(rt.block_on(pool.run(async { 2 })).unwrap(), 2, "the pool goes on");
    }

    #[test]
    fn endless_hand_overs_on_a_thread_let_queued_tasks_in() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = pool(&rt, 1);
        let stop = Arc::new(AtomicBool::new(false));
        // Two tasks wake each other for ever: every wake comes from the pool's one thread.
        let (ping, mut pings) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (pong, mut pongs) = tokio::sync::mpsc::unbounded_channel::<()>();
        let s = stop.clone();
        let a = pool.spawn(async move {
            while !s.load(Ordering::Relaxed) && pings.recv().await.is_some() {
                let _ = pong.send(());
            }
        });
        let s = stop.clone();
        let first = ping.clone();
        let b = pool.spawn(async move {
            while !s.load(Ordering::Relaxed) && pongs.recv().await.is_some() {
                let _ = ping.send(());
            }
        });
        first.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let out = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), pool.run(async { 3 })).await
        });
        stop.store(true, Ordering::Relaxed);
        assert_eq!(out.expect("a task from outside ran beside the hand-overs").unwrap(), 3);
        a.abort();
        b.abort();
    }

    #[test]
    fn the_pool_adds_one_thread_for_one_held_thread() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = pool(&rt, 1);
        let (release, held) = hold(&pool);
        std::thread::sleep(Duration::from_millis(20));
        let quick: Vec<_> = (0..200)
            .map(|i| {
                pool.run(async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    i
                })
            })
            .collect();
        rt.block_on(async {
            for (i, task) in quick.into_iter().enumerate() {
                assert_eq!(task.await.unwrap(), i);
            }
        });
        assert_eq!(lock(&pool.shared.queue).stamps.len(), 2, "one thread added, not more");
        release.store(true, Ordering::Release);
        rt.block_on(held).unwrap();
        // Back to one thread that code does not hold: the added one leaves between tasks.
        assert_eq!(rt.block_on(pool.run(async { 5 })).unwrap(), 5);
        let deadline = Instant::now() + RETIRE * 3;
        while lock(&pool.shared.queue).stamps.len() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(lock(&pool.shared.queue).stamps.len(), 1);
    }
}
