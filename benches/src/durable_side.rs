//! The workloads on durable: the orchestrations, and one function per measurement.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable::store::{
    Appended, Entries, Lease, Message, OnChange, SledStore, Space, Store, StoreError, Timer,
    Versioned, Write, WriteError,
};
use durable::{Ctx, Durability, Failure, Runtime, StepEvent, activity, orchestration};
use tokio::sync::Notify;

use crate::probe;
use crate::sys;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The loop of the resume measurement; its activity reports to the probe.
#[activity]
pub(crate) async fn loop_step(acc: u64, i: u64) -> Result<u64, String> {
    probe::on_step(i).await;
    Ok(acc.wrapping_add(i))
}

#[orchestration]
pub(crate) async fn counted_loop(ctx: Ctx, n: u64) -> Result<u64, Failure> {
    let mut acc = 0;
    for i in 0..n {
        acc = ctx.call(loop_step, (acc, i)).await?;
    }
    Ok(acc)
}

/// The activity of the throughput and CPU measurements: as cheap as an activity can be.
#[activity]
pub(crate) async fn add(a: u64, b: u64) -> Result<u64, String> {
    Ok(a.wrapping_add(b))
}

#[orchestration]
pub(crate) async fn plain_loop(ctx: Ctx, n: u64) -> Result<u64, Failure> {
    let mut acc = 0;
    for i in 0..n {
        acc = ctx.call(add, (acc, i)).await?;
    }
    Ok(acc)
}

#[orchestration]
pub(crate) async fn three_steps(ctx: Ctx, x: u64) -> Result<u64, Failure> {
    let a = ctx.call(add, (x, 1)).await?;
    let b = ctx.call(add, (a, 2)).await?;
    let c = ctx.call(add, (b, 3)).await?;
    Ok(c)
}

#[orchestration]
async fn awaiting_approval(ctx: Ctx, order: u64) -> Result<u64, Failure> {
    let approved = ctx.wait_event::<u64>("approval").await?;
    Ok(order.wrapping_add(approved))
}

/// The loop of the state-size measurement (issue 14): `n` steps while `big` — `items` strings
/// of 100 bytes, about 100 KB for 1,000 — stays alive and unmodified; used after the loop.
#[orchestration]
pub(crate) async fn loop_beside_state(ctx: Ctx, n: u64, items: u64) -> Result<u64, Failure> {
    let big: Vec<String> = (0..items).map(|i| format!("{i:0>100}")).collect();
    let mut acc = 0;
    for i in 0..n {
        acc = ctx.call(add, (acc, i)).await?;
    }
    Ok(acc.wrapping_add(big.len() as u64))
}

/// A `for` over an owned `Vec` whose body awaits (issue 14): one step per item.
#[orchestration]
pub(crate) async fn for_over_vec(ctx: Ctx, items: Vec<String>) -> Result<u64, Failure> {
    let mut acc = 0;
    for item in items {
        acc = ctx.call(add, (acc, item.len() as u64)).await?;
    }
    Ok(acc)
}

/// A step that appends one string of 100 bytes to a `Vec` of `base` such strings, `steps`
/// times: what changes at each checkpoint is the end of the `Vec`.
#[orchestration]
pub(crate) async fn appends_to_vec(ctx: Ctx, base: u64, steps: u64) -> Result<u64, Failure> {
    let mut kept: Vec<String> = (0..base).map(|i| format!("{i:0>100}")).collect();
    for i in 0..steps {
        let n = ctx.call(add, (kept.len() as u64, i)).await?;
        kept.push(format!("{n:0>100}"));
    }
    Ok(kept.len() as u64)
}

/// The plain loop without durability: the same activity body, called directly.
pub async fn plain_calls(n: u64) -> Result<u64, String> {
    let mut acc = 0;
    for i in 0..n {
        acc = add::run(acc, i).await?;
    }
    Ok(acc)
}

/// Counts step events and wakes a waiter when a target count is reached.
#[derive(Default)]
struct StepCounter {
    count: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl StepCounter {
    fn observe(
        self: &Arc<Self>,
        filter: fn(&StepEvent) -> bool,
    ) -> impl Fn(&StepEvent) + Send + Sync + 'static {
        let this = self.clone();
        move |e: &StepEvent| {
            if filter(e) {
                let n = this.count.fetch_add(1, Ordering::SeqCst) + 1;
                if n == this.target.load(Ordering::SeqCst) {
                    this.reached.notify_one();
                }
            }
        }
    }

    async fn wait_for(&self, target: u64) {
        let reached = self.reached.notified();
        tokio::pin!(reached);
        reached.as_mut().enable();
        self.target.store(target, Ordering::SeqCst);
        if self.count.load(Ordering::SeqCst) >= target {
            return;
        }
        reached.await;
    }
}

fn is_completion(e: &StepEvent) -> bool {
    matches!(e.outcome, durable::StepOutcome::Completed)
}

fn any_step(_: &StepEvent) -> bool {
    true
}

// ----- resume cost (children) -----

/// Child: writes the history of an instance that has completed `k` steps of `counted_loop`,
/// with the call of step `k + 1` in flight, then shuts down cleanly (flushing). Buffered, for
/// speed; the resume is measured with the default durability. Returns the build time.
pub async fn build_history(db: &Path, k: u64) -> Result<Duration, BoxError> {
    let t = Instant::now();
    probe::install(probe::Mode::Build { stop_at: k });
    let rt = Runtime::builder(db)
        .orchestration(counted_loop)
        .durability(Durability::Buffered)
        .open()
        .await?;
    let _handle = rt.start(counted_loop, "resume", k + 10).await?;
    probe::done().await;
    rt.shutdown().await;
    drop(rt);
    Ok(t.elapsed())
}

/// Child: opens the database (default durability) and reports the times, since just before
/// `open`, of: `open` returned, the in-flight call K+1 started again, call K+2 started (after
/// step K+1 was checkpointed and flushed).
pub async fn resume(db: &Path, k: u64) -> Result<[Duration; 3], BoxError> {
    probe::install(probe::Mode::Resume { first: k });
    let rt = Runtime::builder(db).orchestration(counted_loop).open().await?;
    let opened = probe::elapsed();
    probe::done().await;
    let (first, next) = probe::resume_times();
    drop(rt);
    Ok([opened, first, next])
}

/// The pauses a long run sees in the store itself: `n` rewrites of one 200-byte record through
/// [`Store::write`] on a fresh `SledStore` that reopens itself every `reopen_every` writes (0:
/// never), no flushes (as a Buffered run writes). Returns the longest write, the number of
/// writes over 2 ms, and the median write.
pub fn store_pauses(
    db: &Path,
    n: u64,
    reopen_every: u64,
) -> Result<(Duration, u64, Duration), BoxError> {
    sys::remove(db);
    let store = SledStore::open_with(db, reopen_every)?;
    let mut record = vec![0u8; 200];
    let mut version = store.create("pauses", &record)?.map_or(1, |v| v.version);
    let mut took = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 0..n {
        record[..8].copy_from_slice(&i.to_le_bytes());
        let write = Write {
            expected: version,
            record: &record,
            fence: None,
            consumed: &[],
            finished: false,
        };
        let t = Instant::now();
        version = store.write("pauses", &write)?;
        took.push(t.elapsed());
    }
    drop(store);
    sys::remove(db);
    let over = took.iter().filter(|d| **d > Duration::from_millis(2)).count() as u64;
    let worst = took.iter().copied().max().unwrap_or_default();
    took.sort_unstable();
    let median = took.get(took.len() / 2).copied().unwrap_or_default();
    Ok((worst, over, median))
}

/// Child: opens the database with sled alone, as `SledStore::open` does (default configuration,
/// two trees), and reads the resume instance: the storage engine's share of a resume.
pub fn sled_open(db: &Path) -> Result<Duration, BoxError> {
    let t = Instant::now();
    let sled_db = sled::Config::new().path(db).open()?;
    let instances = sled_db.open_tree("instances")?;
    let _timers = sled_db.open_tree("timers")?;
    let _ = instances.get(b"resume")?;
    Ok(t.elapsed())
}

// ----- one instance, sequential steps -----

/// One instance of `n` sequential steps, default durability: wall time and CPU time from the
/// start call to the output.
pub async fn sequential(db: &Path, n: u64) -> Result<(Duration, Duration), BoxError> {
    sequential_with(db, n, Durability::Flush, true).await
}

/// As [`sequential`], with the given durability.
pub async fn sequential_with(
    db: &Path,
    n: u64,
    durability: Durability,
    isolate: bool,
) -> Result<(Duration, Duration), BoxError> {
    sys::remove(db);
    let rt = Runtime::builder(db)
        .orchestration(plain_loop)
        .durability(durability)
        .isolate_code(isolate)
        .open()
        .await?;
    let cpu = sys::cpu_time();
    let t = Instant::now();
    let out = rt.start(plain_loop, "seq", n).await?.wait().await?;
    let wall = t.elapsed();
    let cpu = sys::cpu_time().saturating_sub(cpu);
    if out != (0..n).sum::<u64>() {
        return Err(format!("plain_loop returned {out}").into());
    }
    rt.shutdown().await;
    drop(rt);
    sys::remove(db);
    Ok((wall, cpu))
}

/// The physical reference: per step, one sled insert of `value_len` bytes under `key`, then a
/// flush, on a fresh database with sled's default configuration (as the runtime opens it).
/// With `power_loss`, each flush is followed by an `fdatasync` of sled's `db` file (sled's own
/// flush uses `sync_file_range`, which a power cut can undo): the least a power-loss-durable
/// writer over sled does, and what `SledStore::flush` adds. Returns the wall and CPU time of
/// the `n` steps.
pub fn sled_reference(
    db: &Path,
    key: &[u8],
    value_len: usize,
    n: u64,
    power_loss: bool,
) -> Result<(Duration, Duration), BoxError> {
    sys::remove(db);
    let sled_db = sled::Config::new().path(db).open()?;
    let tree = sled_db.open_tree("instances")?;
    let mut value = vec![0u8; value_len.max(8)];
    let cpu = sys::cpu_time();
    let t = Instant::now();
    for i in 0..n {
        value[..8].copy_from_slice(&i.to_le_bytes());
        tree.insert(key, value.as_slice())?;
        sled_db.flush()?;
        if power_loss {
            std::fs::File::open(db.join("db"))?.sync_data()?;
        }
    }
    let took = t.elapsed();
    let cpu = sys::cpu_time().saturating_sub(cpu);
    drop(tree);
    drop(sled_db);
    sys::remove(db);
    Ok((took, cpu))
}

/// One instance of `loop_beside_state` (`n` steps beside `items` × 100 B of unmodified
/// locals) with `durability`: the wall time from the start call to the output.
pub async fn steps_beside_state(
    db: &Path,
    n: u64,
    items: u64,
    durability: Durability,
) -> Result<Duration, BoxError> {
    sys::remove(db);
    let rt =
        Runtime::builder(db).orchestration(loop_beside_state).durability(durability).open().await?;
    let t = Instant::now();
    let out = rt.start(loop_beside_state, "state", (n, items)).await?.wait().await?;
    let wall = t.elapsed();
    if out != (0..n).sum::<u64>() + items {
        return Err(format!("loop_beside_state returned {out}").into());
    }
    rt.shutdown().await;
    drop(rt);
    sys::remove(db);
    Ok(wall)
}

/// Runs `run` on a runtime over a fresh sled store at `db` that records the sizes of what is
/// written through it (`register` adds the orchestration); returns its result and the sizes.
async fn with_sizes<T>(
    db: &Path,
    durability: Durability,
    register: impl FnOnce(durable::RuntimeBuilder) -> durable::RuntimeBuilder,
    run: impl AsyncFnOnce(&Runtime) -> Result<T, BoxError>,
) -> Result<(T, Vec<usize>), BoxError> {
    sys::remove(db);
    let store = Arc::new(SizeProbe {
        inner: SledStore::open(db)?,
        sizes: Mutex::new(Vec::new()),
        calls: Calls::default(),
    });
    let rt =
        register(Runtime::builder(db).store(store.clone()).durability(durability)).open().await?;
    let out = run(&rt).await?;
    rt.shutdown().await;
    drop(rt);
    let sizes = store.sizes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    drop(store);
    sys::remove(db);
    Ok((out, sizes))
}

/// What `for_over_vec` over `items` strings of `item_len` bytes wrote (Buffered): the bytes
/// of every record write (and frame slot) over the run, and the number of writes.
pub async fn for_loop_bytes(
    db: &Path,
    items: u64,
    item_len: usize,
) -> Result<(u64, u64), BoxError> {
    let list: Vec<String> = (0..items).map(|i| format!("{i:0>item_len$}")).collect();
    let expected = list.iter().map(|s| s.len() as u64).sum::<u64>();
    let register = |b: durable::RuntimeBuilder| b.orchestration(for_over_vec);
    let (out, sizes) = with_sizes(db, Durability::Buffered, register, async |rt| {
        Ok(rt.start(for_over_vec, "for", list).await?.wait().await?)
    })
    .await?;
    if out != expected {
        return Err(format!("for_over_vec returned {out}").into());
    }
    Ok((sizes.iter().map(|&s| s as u64).sum(), sizes.len() as u64))
}

/// What `appends_to_vec` beside `base` strings wrote over `steps` steps (Flush: the first
/// checkpoints, which hold the `Vec` inline until its slots are durable, are the same in every
/// run): the bytes of every record write and frame slot.
pub async fn append_bytes(db: &Path, base: u64, steps: u64) -> Result<u64, BoxError> {
    let register = |b: durable::RuntimeBuilder| b.orchestration(appends_to_vec);
    let (out, sizes) = with_sizes(db, Durability::Flush, register, async |rt| {
        Ok(rt.start(appends_to_vec, "append", (base, steps)).await?.wait().await?)
    })
    .await?;
    if out != base + steps {
        return Err(format!("appends_to_vec returned {out}").into());
    }
    Ok(sizes.iter().map(|&s| s as u64).sum())
}

/// A store that records the sizes of instance records written through it and counts the calls
/// (calibration only): reads of records and inboxes are gets, record writes are puts.
#[derive(Default)]
struct Calls {
    gets: AtomicU64,
    puts: AtomicU64,
    flushes: AtomicU64,
    others: AtomicU64,
}

struct SizeProbe<S> {
    inner: S,
    sizes: Mutex<Vec<usize>>,
    calls: Calls,
}

impl<S: Store> Store for SizeProbe<S> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.calls.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(space, key)
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        // Records and the frame slots written beside them.
        if space != Space::Timers {
            self.sizes.lock().unwrap_or_else(|p| p.into_inner()).push(value.len());
        }
        self.calls.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put(space, key, value)
    }
    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.put_new(space, key, value)
    }
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(space, key)
    }
    fn scan(
        &self,
        space: Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.scan(space, after, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.calls.flushes.fetch_add(1, Ordering::Relaxed);
        self.inner.flush()
    }
    fn create(&self, id: &str, record: &[u8]) -> Result<Option<Versioned>, StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.create(id, record)
    }
    fn read(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        self.calls.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.read(id)
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).push(write.record.len());
        self.calls.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.write(id, write)
    }
    fn remove(&self, id: &str, expected: u64) -> Result<(), WriteError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.remove(id, expected)
    }
    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.append(id, body)
    }
    fn append_once(&self, id: &str, key: &str, body: &[u8]) -> Result<Appended, StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.append_once(id, key, body)
    }
    fn delivered(&self, id: &str, key: &str) -> Result<bool, StoreError> {
        self.calls.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.delivered(id, key)
    }
    fn inbox(&self, id: &str) -> Result<Vec<Message>, StoreError> {
        self.calls.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.inbox(id)
    }
    /// One call (one round trip on PostgreSQL), counted as one read.
    fn read_with_inbox(&self, id: &str) -> Result<Option<(Versioned, Vec<Message>)>, StoreError> {
        self.calls.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.read_with_inbox(id)
    }
    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.claim(owner, now_ms, until_ms, after, limit)
    }
    fn claim_abandoned(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.claim_abandoned(owner, now_ms, until_ms, after, limit)
    }
    fn claim_ids(
        &self,
        owner: &str,
        ids: &[String],
        now_ms: u64,
        until_ms: u64,
    ) -> Option<Result<Vec<Lease>, StoreError>> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.claim_ids(owner, ids, now_ms, until_ms)
    }
    fn lease(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.lease(id, owner, now_ms, until_ms)
    }
    fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.release(lease)
    }
    fn hand_over(&self, lease: &Lease) -> Result<(), StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.hand_over(lease)
    }
    fn renew(&self, owner: &str, ids: &[String], until_ms: u64) -> Result<Vec<String>, StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.renew(owner, ids, until_ms)
    }
    fn set_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.set_timer(timer)
    }
    fn clear_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.clear_timer(timer)
    }
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError> {
        self.calls.others.fetch_add(1, Ordering::Relaxed);
        self.inner.due_timers(now_ms, limit)
    }
    fn recover(&self) -> Result<(), StoreError> {
        self.inner.recover()
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    fn keeps_slots(&self) -> bool {
        self.inner.keeps_slots()
    }
    fn watch(&self, on_change: OnChange) -> Result<(), StoreError> {
        self.inner.watch(on_change)
    }
}

/// What the store saw while `plain_loop` ran `n` steps.
pub struct Calibration {
    /// The median size of the checkpoints written mid-run (key `seq`), in bytes.
    pub record: usize,
    /// Store calls per step: gets, puts, flushes, other calls (start and resume included).
    pub per_step: [f64; 4],
}

/// Runs `plain_loop` for `n` steps on a sled store that watches (default durability).
pub async fn calibrate(db: &Path, n: u64) -> Result<Calibration, BoxError> {
    sys::remove(db);
    let calibration = calibrate_on(SledStore::open(db)?, db, n).await;
    sys::remove(db);
    calibration
}

/// Runs `plain_loop` for `n` steps on `inner`, watched (default durability); `db` is the
/// runtime's directory (unused by stores other than sled's).
pub async fn calibrate_on<S: Store + 'static>(
    inner: S,
    db: &Path,
    n: u64,
) -> Result<Calibration, BoxError> {
    let store =
        Arc::new(SizeProbe { inner, sizes: Mutex::new(Vec::new()), calls: Calls::default() });
    let rt = Runtime::builder(db).store(store.clone()).orchestration(plain_loop).open().await?;
    let before = [&store.calls.gets, &store.calls.puts, &store.calls.flushes, &store.calls.others]
        .map(|c| c.load(Ordering::SeqCst));
    rt.start(plain_loop, "seq", n).await?.wait().await?;
    let after = [&store.calls.gets, &store.calls.puts, &store.calls.flushes, &store.calls.others]
        .map(|c| c.load(Ordering::SeqCst));
    rt.shutdown().await;
    drop(rt);
    let mut sizes = store.sizes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    drop(store);
    sizes.sort_unstable();
    let record = sizes.get(sizes.len() / 2).copied().unwrap_or(0);
    let per_step = [0, 1, 2, 3].map(|i| after[i].saturating_sub(before[i]) as f64 / n as f64);
    Ok(Calibration { record, per_step })
}

// ----- many instances at once -----

/// `instances` instances of `three_steps` started at once, default durability: the time from
/// the first start call until the last instance completed (counted by the step observer, or
/// by each instance's `Handle::wait` when `handles`). `many`: started by one `start_many`
/// call instead of one `start` task each.
pub async fn fan_out(
    db: &Path,
    instances: u64,
    handles: bool,
    many: bool,
) -> Result<(Duration, Duration), BoxError> {
    sys::remove(db);
    let counter = Arc::new(StepCounter::default());
    let rt = Runtime::builder(db)
        .orchestration(three_steps)
        .on_step(counter.observe(is_completion))
        .open()
        .await?;
    let cpu = sys::cpu_time();
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    if many {
        for started in
            rt.start_many(three_steps, (0..instances).map(|i| (format!("fan-{i:06}"), i))).await
        {
            started?;
        }
    }
    for i in (0..instances).filter(|_| !many) {
        let rt = rt.clone();
        tasks.spawn(async move {
            let handle = rt.start(three_steps, format!("fan-{i:06}"), i).await?;
            if handles {
                let out = handle.wait().await?;
                if out != i + 6 {
                    return Err::<(), BoxError>(format!("instance {i} returned {out}").into());
                }
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    if tokio::time::timeout(Duration::from_secs(300), counter.wait_for(instances)).await.is_err() {
        let done = counter.count.load(Ordering::SeqCst);
        return Err(format!("fan-out: {done} of {instances} instances completed in 300 s").into());
    }
    let took = t.elapsed();
    let cpu = sys::cpu_time().saturating_sub(cpu);
    rt.shutdown().await;
    drop(rt);
    sys::remove(db);
    Ok((took, cpu))
}

/// How [`starts`] starts its instances.
#[derive(Debug, Clone, Copy)]
pub enum Starting {
    /// `start` awaited one after another.
    OneByOne,
    /// Every `start` at once, each in a task of its own.
    Concurrent,
    /// One `start_many` call.
    Many,
}

/// The time `n` starts of `three_steps` take on a client-only runtime (no worker runs them).
pub async fn starts(db: &Path, n: u64, how: Starting) -> Result<Duration, BoxError> {
    sys::remove(db);
    let rt = Runtime::builder(db).orchestration(three_steps).worker(false).open().await?;
    let id = |i: u64| format!("start-{i:06}");
    let t = Instant::now();
    match how {
        Starting::OneByOne => {
            for i in 0..n {
                rt.start(three_steps, id(i), i).await?;
            }
        }
        Starting::Concurrent => {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..n {
                let rt = rt.clone();
                tasks.spawn(async move { rt.start(three_steps, id(i), i).await.map(drop) });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
        }
        Starting::Many => {
            for started in rt.start_many(three_steps, (0..n).map(|i| (id(i), i))).await {
                started?;
            }
        }
    }
    let took = t.elapsed();
    rt.shutdown().await;
    drop(rt);
    sys::remove(db);
    Ok(took)
}

// ----- waiting instances (child) -----

/// What [`waiting`] measured.
pub struct Waiting {
    pub started_in: Duration,
    pub rss: u64,
    pub peak: u64,
    pub disk_apparent: u64,
    pub disk_allocated: u64,
}

/// Child: starts `n` instances that wait for an event (at most `concurrency` start calls in
/// flight), waits until each has checkpointed its wait, then reads this process's memory,
/// shuts down, and measures the database directory.
pub async fn waiting(db: &Path, n: u64, concurrency: usize) -> Result<Waiting, BoxError> {
    sys::remove(db);
    let counter = Arc::new(StepCounter::default());
    let rt = Runtime::builder(db)
        .orchestration(awaiting_approval)
        .on_step(counter.observe(any_step))
        .open()
        .await?;
    let t = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let rt = rt.clone();
        tasks.spawn(async move {
            let r = rt.start(awaiting_approval, format!("order-{i:07}"), i).await;
            drop(permit);
            r.map(|_| ())
        });
        while let Some(r) = tasks.try_join_next() {
            r??;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    if tokio::time::timeout(Duration::from_secs(300), counter.wait_for(n)).await.is_err() {
        let done = counter.count.load(Ordering::SeqCst);
        return Err(format!("waiting: {done} of {n} instances parked in 300 s").into());
    }
    let started_in = t.elapsed();
    // Let drivers that just parked finish ending.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss, peak) = sys::memory();
    rt.shutdown().await;
    drop(rt);
    let (disk_apparent, disk_allocated) = sys::dir_size(db);
    Ok(Waiting { started_in, rss, peak, disk_apparent, disk_allocated })
}

/// Child: reopens a database of waiting instances, lets the runtime look at every one, and
/// reads this process's memory. Returns (open time, rss, peak rss).
pub async fn waiting_reopen(db: &Path) -> Result<(Duration, u64, u64), BoxError> {
    let t = Instant::now();
    let rt = Runtime::builder(db).orchestration(awaiting_approval).open().await?;
    let opened = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, peak) = sys::memory();
    drop(rt);
    Ok((opened, rss, peak))
}
