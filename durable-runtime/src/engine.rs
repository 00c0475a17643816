//! The engine of one runtime: which instances have a driver task in this process, waking them,
//! starting instances, shutting down, and the states kept in memory between steps.
//!
//! The engine holds no record: it reads and writes them through [`Records`]. A driver
//! (the `driver` module) runs one instance; the timer task (the `timers` module), clients and
//! finishing children wake it through [`Engine::wake`].
//!
//! Over 400 lines: the driver table, waking, the claims that start drivers and shutdown share
//! one lock (`active`) and its rules; split apart, each would need the others' invariants.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::clock::Clock;
use crate::error::{ClientError, StartError};
use crate::ids::shown_id;
use crate::orchestration::{ErasedOrchestration, LiveState};
use crate::pool::{Pool, Spawned};
use crate::record::InstanceRecord;
use crate::records::Records;
use crate::registry::Registered;
use crate::slots::SlotBook;
use crate::status::Observer;
use crate::store::{Lease, StoreError};

/// Locks `m`, also after a panic elsewhere held it (what it guards stays consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// At most this many suspended instances keep their state in memory; past it, the state of
/// another one is dropped and decoded from its checkpoint when it resumes.
const RESIDENT_LIMIT: usize = 10_000;
/// At most this many slot books are kept, holding at most [`BOOK_BYTES`] together (each holds a
/// copy of its last frame's locals, 8 KiB or more): an instance whose book was evicted writes its
/// unchanged chunks inline once more.
const BOOK_LIMIT: usize = 1_000;
/// See [`BOOK_LIMIT`].
const BOOK_BYTES: usize = 256 << 20;

/// A checkpoint of an instance: when the instance was created (an instance purged and started
/// again under its id is another one) and its step count. Written once, by one worker: a state
/// kept for it is the state its record holds, whichever worker reads it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) created_ms: u64,
    pub(crate) steps: u64,
}

/// A driver task and how to wake it.
pub(crate) struct Driver {
    pub(crate) task: Spawned,
    pub(crate) wakes: Arc<AtomicU64>,
    pub(crate) notify: Arc<Notify>,
    /// A newer lease of the instance this process took (a poll re-claimed it after the
    /// driver's own lease ran out), for the driver to write under.
    pub(crate) handed: Handed,
}

/// A lease handed to a running driver; see [`Driver::handed`].
pub(crate) type Handed = Arc<Mutex<Option<Lease>>>;

/// An instance to start: its id, encoded input, parent, and what completes its new record.
pub(crate) struct NewInstance<F> {
    pub(crate) id: String,
    pub(crate) input: Vec<u8>,
    pub(crate) parent: Option<String>,
    pub(crate) shape: F,
}

/// Runs the driver of one instance (the `driver` module's `drive`); given to the engine by the
/// code that builds it, so that the engine does not depend on the driver that depends on it.
pub(crate) type DriveFn = fn(
    Arc<Engine>,
    String,
    Option<Lease>,
    Arc<AtomicU64>,
    Arc<Notify>,
    Handed,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pub(crate) struct Engine {
    drive: DriveFn,
    pub(crate) records: Records,
    pub(crate) registered: Registered,
    pub(crate) observer: Option<Observer>,
    pub(crate) max_payload: usize,
    pub(crate) clock: Clock,
    /// Driver tasks of this process, by instance.
    active: Mutex<HashMap<String, Driver>>,
    /// Set (under the `active` lock) by [`Engine::shutdown`]: no driver starts after it.
    shut_down: AtomicBool,
    pub(crate) timer_wake: Notify,
    /// The engine's own tasks (the timer task, the watcher of a shared store), ended by
    /// [`Engine::shutdown`].
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Whether this runtime runs instances; a client-only runtime (`worker(false)`) leaves them
    /// to the workers of other processes.
    pub(crate) worker: bool,
    /// The threads that run drivers, steps and attempts when code is isolated
    /// ([`RuntimeBuilder::isolate_code`](crate::RuntimeBuilder::isolate_code)); without it they
    /// run on tokio's.
    pub(crate) pool: Option<Pool>,
    /// Bumped whenever an instance reaches a terminal or refused state.
    pub(crate) changes: watch::Sender<u64>,
    /// The in-memory state of suspended instances, by instance: the checkpoint it belongs to
    /// and the state. See [`Engine::keep_resident`].
    resident: Kept<Resident>,
    /// What the drivers knew of the frame slots of instances with large frames, by instance,
    /// with the checkpoint it belongs to. See [`Engine::keep_book`].
    books: Kept<SlotBook>,
    /// The activity attempts inside a poll, which shutdown waits for.
    pub(crate) attempt_polls: Arc<crate::polls::Polls>,
}

impl Engine {
    pub(crate) fn new(
        drive: DriveFn,
        records: Records,
        registered: Registered,
        observer: Option<Observer>,
        max_payload: usize,
        clock: Clock,
        worker: bool,
    ) -> Self {
        Engine {
            drive,
            records,
            registered,
            observer,
            max_payload,
            clock,
            active: Mutex::new(HashMap::new()),
            shut_down: AtomicBool::new(false),
            timer_wake: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            worker,
            pool: None,
            changes: watch::channel(0u64).0,
            resident: Kept::new(RESIDENT_LIMIT, usize::MAX, |_| 0),
            books: Kept::new(BOOK_LIMIT, BOOK_BYTES, SlotBook::bytes),
            attempt_polls: Arc::default(),
        }
    }

    /// Runs drivers, steps and attempts on `pool` (isolated code) rather than on tokio's threads.
    pub(crate) fn isolating(mut self, pool: Option<Pool>) -> Self {
        self.pool = pool;
        self
    }

    /// Runs `future` where this engine runs its code: on the code pool, or as a tokio task.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) -> Spawned {
        match &self.pool {
            Some(pool) => Spawned::Pool(pool.spawn(future)),
            None => Spawned::Tokio(tokio::spawn(future)),
        }
    }

    /// Tells waiting clients that some instance changed.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Starts instance `id` (`shape` completes its new record); `Ok(true)` when it created it,
    /// `Ok(false)` when the same instance existed.
    pub(crate) async fn start_encoded(
        self: &Arc<Self>,
        orchestration: &str,
        version: Option<u32>,
        id: &str,
        input: Vec<u8>,
        parent: Option<String>,
        shape: impl FnOnce(&mut InstanceRecord),
    ) -> Result<bool, StartError> {
        let start = NewInstance { id: id.to_owned(), input, parent, shape };
        let mut started = self.start_many_encoded(orchestration, version, vec![Ok(start)]).await;
        started.pop().unwrap_or(Ok(false))
    }

    /// [`start_encoded`](Self::start_encoded) for each of `starts` (an `Err` is passed
    /// through), in order, sharing one commit.
    pub(crate) async fn start_many_encoded<F: FnOnce(&mut InstanceRecord)>(
        self: &Arc<Self>,
        orchestration: &str,
        version: Option<u32>,
        starts: Vec<Result<NewInstance<F>, StartError>>,
    ) -> Vec<Result<bool, StartError>> {
        let version = match version {
            Some(v) => v,
            None => self.registered.newest(orchestration).map_or(1, |(v, _)| v),
        };
        let now = self.clock.now_ms();
        // Each start's id, parent and new record, or why it was refused.
        type Prepared = Result<(String, Option<String>, InstanceRecord), StartError>;
        let prepared: Vec<Prepared> = starts
            .into_iter()
            .map(|start| {
                let NewInstance { id, input, parent, shape } = start?;
                if input.len() > self.max_payload {
                    return Err(StartError::Input {
                        reason: format!(
                            "{} bytes exceed the limit of {} bytes",
                            input.len(),
                            self.max_payload
                        ),
                        id,
                    });
                }
                let mut rec =
                    InstanceRecord::new(orchestration, version, input, now, parent.clone());
                shape(&mut rec);
                Ok((id, parent, rec))
            })
            .collect();
        let items: Vec<(&str, &InstanceRecord)> =
            prepared.iter().flatten().map(|(id, _, rec)| (id.as_str(), rec)).collect();
        let mut created = self.records.create_many(&items).await.into_iter();
        let started = prepared
            .into_iter()
            .map(|p| {
                let (id, parent, _) = p?;
                let present = created
                    .next()
                    .unwrap_or_else(|| Err(StoreError::Io("not created".into()).into()))
                    .map_err(|e| match e {
                        ClientError::Store(e) => StartError::Store(e),
                        e => StartError::Input { id: shown_id(&id), reason: e.to_string() },
                    })?;
                self.started(orchestration, &id, parent, present)
            })
            .collect();
        // A client's starts wait while the code pool has a long backlog (an orchestration's
        // starts of children are bounded by the orchestration).
        if let Some(pool) = &self.pool
            && !crate::pool::on_pool_thread()
        {
            pool.room().await;
        }
        started
    }

    /// Wakes a created instance, or checks that the instance present under `id` is the one
    /// asked for: `Ok(true)` when it was created.
    fn started(
        self: &Arc<Self>,
        orchestration: &str,
        id: &str,
        parent: Option<String>,
        present: Option<Result<InstanceRecord, String>>,
    ) -> Result<bool, StartError> {
        let Some(existing) = present else {
            tracing::debug!(instance = %id, orchestration, "started");
            self.wake(id);
            return Ok(true);
        };
        let existing =
            existing.map_err(|reason| StartError::Unreadable { id: id.into(), reason })?;
        if existing.orchestration != orchestration {
            return Err(StartError::Conflict {
                id: id.into(),
                existing: existing.orchestration,
                requested: orchestration.into(),
            });
        }
        // A sub-orchestration's id is derived from its parent's; a client that took it first (or
        // another parent) must not hand its result to this parent.
        if existing.parent != parent {
            let who = |p: &Option<String>| match p {
                Some(p) => format!("parent `{}`", shown_id(p)),
                None => "a client".to_owned(),
            };
            return Err(StartError::Taken {
                id: shown_id(id),
                owner: who(&existing.parent),
                requested: who(&parent),
            });
        }
        // An earlier start may have written it and then failed to make it durable before waking
        // it: make sure it runs.
        if !existing.is_terminal() {
            self.wake(id);
        }
        Ok(false)
    }

    /// Registers one orchestration (replacing one of the same name and version) and wakes the
    /// instances that waited for it.
    pub(crate) fn register<O: crate::orchestration::Orchestration>(self: &Arc<Self>, o: O) {
        let mut registry = crate::orchestration::Registry::default();
        registry.add_orchestration(|| o);
        self.adopt(registry, true);
    }

    /// Adds what `registry` knows (see [`Registered::adopt`]) and wakes the instances that
    /// waited for one of its orchestrations or activities.
    pub(crate) fn adopt(self: &Arc<Self>, registry: crate::orchestration::Registry, replace: bool) {
        for id in self.registered.adopt(registry, replace) {
            self.wake(&id);
        }
    }

    /// Looks at the instances other processes announced changes of: the drivers this runtime
    /// runs are woken, and the rest are claimed in one store call (not a lease each), which
    /// leaves an instance that another worker is claiming at this moment to that worker.
    pub(crate) fn wake_announced(self: &Arc<Self>, ids: Vec<String>) -> Result<(), StoreError> {
        if !self.worker {
            return Ok(());
        }
        let mut idle = Vec::new();
        for id in ids {
            let running = lock(&self.active).get(&id).is_some_and(|d| !d.task.is_finished());
            if running {
                self.wake(&id);
            } else {
                idle.push(id);
            }
        }
        idle.sort_unstable();
        idle.dedup();
        if idle.is_empty() {
            return Ok(());
        }
        let Some(claimed) = self.records.claim_ids(&idle, self.clock.now_ms()) else {
            // The store claims one instance at a time: each driver takes its own lease.
            for id in &idle {
                self.wake(id);
            }
            return Ok(());
        };
        for lease in claimed? {
            let id = lease.id.clone();
            self.start_driver(&id, Some(lease));
        }
        Ok(())
    }

    /// Wakes every unfinished instance this runtime can claim (each re-arms its own timers).
    pub(crate) fn resume_all(self: &Arc<Self>) -> Result<(), StoreError> {
        self.resume(false)
    }

    /// Wakes the unfinished instances whose lease ran out while held (their worker died or
    /// stalled): what the poll of a shared store looks for.
    pub(crate) fn resume_abandoned(self: &Arc<Self>) -> Result<(), StoreError> {
        self.resume(true)
    }

    fn resume(self: &Arc<Self>, abandoned: bool) -> Result<(), StoreError> {
        if !self.worker {
            return Ok(());
        }
        let mut after: Option<String> = None;
        loop {
            let page =
                self.records.claim(self.clock.now_ms(), after.as_deref(), 1024, abandoned)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for lease in page {
                self.start_driver(&lease.id.clone(), Some(lease));
            }
        }
        Ok(())
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    pub(crate) async fn shutdown(&self) {
        {
            // Under the lock `wake` takes: no driver starts after this.
            let _active = lock(&self.active);
            self.shut_down.store(true, Ordering::SeqCst);
        }
        // No attempt runs activity code from its next poll on, even one whose driver is
        // leaving and so not stopped below.
        self.attempt_polls.close();
        // Waiting clients see the flag.
        self.changed();
        let own = std::mem::take(&mut *lock(&self.tasks));
        for t in &own {
            t.abort();
        }
        for t in own {
            let _ = t.await;
        }
        let (ids, tasks): (Vec<_>, Vec<_>) =
            lock(&self.active).drain().map(|(id, d)| (id, d.task)).unzip();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            t.join().await;
        }
        // The drivers are gone, and with them the stops of their attempts; activity code that
        // was running meanwhile has not seen its stop yet: wait for it to reach its `.await`.
        if !self.attempt_polls.settle(crate::polls::SETTLE).await {
            tracing::warn!(
                "shutdown: activity code still runs after {:?} (it blocks its thread); it runs \
                 on, unheard",
                crate::polls::SETTLE
            );
        }
        if self.records.shared() {
            // Hand the instances this worker ran over to the others at once, rather than when
            // the leases run out: its drivers are gone, so nothing of it writes any more.
            let now = self.clock.now_ms();
            for id in ids {
                if let Ok(Some(lease)) = self.records.lease(&id, now) {
                    self.records.release(&lease, true);
                }
            }
        }
        // Like the futures of a runtime that shuts down, the kept states are dropped.
        self.resident.clear();
        self.books.clear();
        self.records.flush();
    }

    // ----- waking -----

    /// Makes sure instance `id` gets looked at: notifies its driver or starts one.
    pub(crate) fn wake(self: &Arc<Self>, id: &str) {
        self.start_driver(id, None);
    }

    fn start_driver(self: &Arc<Self>, id: &str, lease: Option<Lease>) {
        if !self.worker {
            // The store tells the workers of other processes.
            return;
        }
        let mut active = lock(&self.active);
        if self.is_shut_down() {
            // Stays stored; the next runtime over the database resumes it. A lease claimed for
            // it goes to the other workers at once, not when it runs out (shutdown hands over
            // the leases of its drivers only).
            if let Some(lease) = lease {
                self.records.release(&lease, true);
            }
            return;
        }
        if let Some(d) = active.get(id)
            && !d.task.is_finished()
        {
            if let Some(lease) = lease {
                // Claimed anew while the driver runs: its own lease ran out unrenewed (and
                // nobody else took the instance since, or this claim would have failed). Its
                // writes must carry the new token, or they would be refused as another
                // worker's.
                let mut handed = lock(&d.handed);
                if handed.as_ref().is_none_or(|h| h.token < lease.token) {
                    *handed = Some(lease);
                }
            }
            d.wakes.fetch_add(1, Ordering::SeqCst);
            d.notify.notify_one();
            return;
        }
        let wakes = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(Notify::new());
        let span = tracing::info_span!("instance", id = %id);
        let handed = Handed::default();
        let task = self.spawn(
            (self.drive)(
                self.clone(),
                id.to_owned(),
                lease,
                wakes.clone(),
                notify.clone(),
                handed.clone(),
            )
            .instrument(span),
        );
        active.insert(id.to_owned(), Driver { task, wakes, notify, handed });
    }

    /// Ends the driver of `id` unless it was woken since `seen`; `true` when it may stop. Its
    /// lease is given back under the lock `wake` takes, so a driver started after it takes a
    /// new one.
    pub(crate) fn may_stop(&self, id: &str, wakes: &AtomicU64, seen: u64, lease: &Lease) -> bool {
        self.may_stop_and(id, wakes, seen, lease, false)
    }

    /// [`may_stop`](Self::may_stop) for a driver that leaves work behind that another worker
    /// may do (this one cannot run the instance's orchestration or version): the lease is
    /// handed over, which wakes the other workers.
    pub(crate) fn may_hand_over(
        &self,
        id: &str,
        wakes: &AtomicU64,
        seen: u64,
        lease: &Lease,
    ) -> bool {
        self.may_stop_and(id, wakes, seen, lease, true)
    }

    fn may_stop_and(
        &self,
        id: &str,
        wakes: &AtomicU64,
        seen: u64,
        lease: &Lease,
        hand_over: bool,
    ) -> bool {
        let mut active = lock(&self.active);
        if wakes.load(Ordering::SeqCst) != seen {
            return false;
        }
        active.remove(id);
        self.records.release(lease, hand_over);
        drop(active);
        // Waiters on a refused instance decide by whether a driver still retries it.
        self.changed();
        true
    }

    /// Forgets the driver of `id`, which ends without a lease.
    pub(crate) fn forget_driver(&self, id: &str) {
        lock(&self.active).remove(id);
        self.changed();
    }

    /// Forgets the driver of `id` (it ends now) and starts another with its lease: it was woken
    /// while ending.
    pub(crate) fn restart_driver(self: &Arc<Self>, id: &str, lease: Option<Lease>) {
        lock(&self.active).remove(id);
        self.start_driver(id, lease);
    }

    /// The instances a driver of this process works on.
    pub(crate) fn driven(&self) -> Vec<String> {
        lock(&self.active)
            .iter()
            .filter(|(_, d)| !d.task.is_finished())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether a driver of this process works on `id`.
    pub(crate) fn is_driven(&self, id: &str) -> bool {
        lock(&self.active).get(id).is_some_and(|d| !d.task.is_finished())
    }

    // ----- states kept between steps -----

    /// Keeps the state a step of orchestration `by` suspended with for the next step of this
    /// process. Values then live on exactly as in plain Rust; only a restart decodes them from
    /// the checkpoint.
    pub(crate) fn keep_resident(
        &self,
        id: &str,
        at: Checkpoint,
        state: LiveState,
        by: &Arc<dyn ErasedOrchestration>,
    ) {
        self.resident.keep(id, at, Resident { state, by: by.clone() });
    }

    /// The kept state of `id` if it belongs to checkpoint `at` and was left by orchestration
    /// `by` (the same registered object, whose machine takes it back for certain). Another
    /// worker sharing the store may have run the instance since this one kept it: then the
    /// record is at a later checkpoint and the kept state is dropped.
    pub(crate) fn take_resident(
        &self,
        id: &str,
        at: Checkpoint,
        by: &Arc<dyn ErasedOrchestration>,
    ) -> Option<LiveState> {
        self.resident.take(id, at).filter(|r| Arc::ptr_eq(&r.by, by)).map(|r| r.state)
    }

    /// Drops the kept state of an instance that will not run another step here.
    pub(crate) fn forget_resident(&self, id: &str) {
        self.resident.forget(id);
        self.books.forget(id);
    }

    /// Keeps what a driver knew of the frame slots of `id` after writing checkpoint `at`, for
    /// the instance's next driver (up to [`BOOK_LIMIT`] instances; one evicted starts again
    /// from the slots its record names).
    pub(crate) fn keep_book(&self, id: &str, at: Checkpoint, book: SlotBook) {
        self.books.keep(id, at, book);
    }

    /// The kept book of `id` if it belongs to checkpoint `at`. (Another worker that ran the
    /// instance since may have deleted slots a stale book would name.)
    pub(crate) fn take_book(&self, id: &str, at: Checkpoint) -> Option<SlotBook> {
        self.books.take(id, at)
    }
}

/// A suspended instance's state kept in memory, with the orchestration whose machine left it.
struct Resident {
    state: LiveState,
    by: Arc<dyn ErasedOrchestration>,
}

/// Values kept between the steps of instances, each with the checkpoint it belongs to: at most
/// `limit` of them, weighing at most `max_weight` together (`weight` of each); an arbitrary one
/// is evicted to make room. Evicted, replaced and stale values are dropped outside the lock: a
/// value's `Drop` may take its time.
struct Kept<T> {
    map: Mutex<Held<T>>,
    limit: usize,
    max_weight: usize,
    weight: fn(&T) -> usize,
}

/// The values of a [`Kept`] and their total weight.
struct Held<T> {
    entries: HashMap<String, (Checkpoint, T)>,
    weight: usize,
}

impl<T> Held<T> {
    fn remove(&mut self, id: &str, weight: fn(&T) -> usize) -> Option<(Checkpoint, T)> {
        let gone = self.entries.remove(id)?;
        self.weight = self.weight.saturating_sub(weight(&gone.1));
        Some(gone)
    }
}

impl<T> Kept<T> {
    fn new(limit: usize, max_weight: usize, weight: fn(&T) -> usize) -> Self {
        let held = Held { entries: HashMap::new(), weight: 0 };
        Kept { map: Mutex::new(held), limit, max_weight, weight }
    }

    fn keep(&self, id: &str, at: Checkpoint, value: T) {
        let w = (self.weight)(&value);
        if w > self.max_weight {
            return;
        }
        let dropped = {
            let mut held = lock(&self.map);
            let mut dropped: Vec<_> = held.remove(id, self.weight).into_iter().collect();
            while held.entries.len() >= self.limit
                || (!held.entries.is_empty() && held.weight.saturating_add(w) > self.max_weight)
            {
                let Some(other) = held.entries.keys().next().cloned() else { break };
                dropped.extend(held.remove(&other, self.weight));
            }
            held.weight = held.weight.saturating_add(w);
            held.entries.insert(id.to_owned(), (at, value));
            dropped
        };
        drop(dropped);
    }

    fn take(&self, id: &str, at: Checkpoint) -> Option<T> {
        let kept = lock(&self.map).remove(id, self.weight);
        match kept {
            Some((kept_at, value)) if kept_at == at => Some(value),
            _ => None,
        }
    }

    fn forget(&self, id: &str) {
        let kept = lock(&self.map).remove(id, self.weight);
        drop(kept);
    }

    fn clear(&self) {
        let all = {
            let mut held = lock(&self.map);
            held.weight = 0;
            std::mem::take(&mut held.entries)
        };
        drop(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(steps: u64) -> Checkpoint {
        Checkpoint { created_ms: 1, steps }
    }

    #[test]
    fn kept_values_stay_within_their_count_and_weight_and_match_their_checkpoint() {
        let kept: Kept<usize> = Kept::new(3, 100, |w| *w);
        kept.keep("a", at(1), 40);
        kept.keep("b", at(1), 40);
        assert_eq!(kept.take("a", at(2)), None, "another checkpoint: dropped");
        assert_eq!(kept.take("a", at(1)), None, "and gone");
        kept.keep("a", at(1), 40);
        // 40 + 40 + 40 is over 100: one of the others makes room.
        kept.keep("c", at(1), 40);
        let left = ["a", "b"].iter().filter(|id| kept.take(id, at(1)).is_some()).count();
        assert_eq!(left, 1);
        assert_eq!(kept.take("c", at(1)), Some(40));
        kept.keep("big", at(1), 101);
        assert_eq!(kept.take("big", at(1)), None, "heavier than the whole: not kept");
        for id in ["x", "y", "z", "w"] {
            kept.keep(id, at(1), 1);
        }
        let left = ["x", "y", "z", "w"].iter().filter(|id| kept.take(id, at(1)).is_some()).count();
        assert_eq!(left, 3, "at most three");
        kept.keep("r", at(1), 50);
        kept.keep("r", at(2), 50);
        kept.keep("s", at(1), 50);
        assert_eq!(kept.take("r", at(2)), Some(50), "a value replaced frees its weight");
    }
}
