//! The engine: one driver task per instance that has work in this process, a timer task, and
//! the read-modify-write of instance records.
//!
//! A driver loops: read the record; apply a requested cancellation or suspension; resolve the
//! branches of the pending command that are ready (a due timer, a buffered event, a finished
//! child, a finished activity); when the command is complete, run the orchestration's step and
//! checkpoint its result (one write, then a group-committed flush) before anything else
//! happens. When only waiting is left (timers, events, children) the driver ends: a waiting
//! instance holds no task, only its record, for timers an index entry, and (up to
//! `RESIDENT_LIMIT` instances) its state in memory for the next step. The timer task,
//! `raise_event`, a finishing child or a client wakes it again.
//!
//! Every write of an instance record happens under that instance's lock (striped), after
//! re-reading it, so a client's event and the driver's checkpoint never overwrite each other.
//!
//! The orchestration's code of each step and each activity attempt run on tokio's blocking pool,
//! never on the worker threads that run drivers, the timer task and clients: code that blocks or
//! loops stalls only its own instance. Every record written is checked first against the record
//! limit and the decoder's limits, so nothing is acknowledged that could not be read back.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;

use crate::activity::{ActivityContext, ActivityRegistry};
use crate::clock::{Clock, ms};
use crate::codec;
use crate::commit::{Epoch, GroupCommit};
use crate::op::{ActivityFailure, ChildFailure, Command, Completion, RetryPolicy};
use crate::orchestration::{
    Ctx, ErasedOrchestration, Fault, LiveState, Orchestration, Registry, Resume, StepResult,
};
use crate::record::{Branch, Frame, InstanceRecord, Pending, State};
use crate::runtime::{
    ClientError, Durability, InstanceState, InstanceStatus, Observer, StartError, StepEvent,
    StepOutcome, shown_id, time_of, validate_id,
};
use crate::store::{Space, Store, StoreError};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registered orchestrations by name and version.
pub(crate) type Orchestrations = HashMap<(&'static str, u32), Arc<dyn ErasedOrchestration>>;

/// A driver task and how to wake it.
pub(crate) struct Driver {
    task: tokio::task::JoinHandle<()>,
    wakes: Arc<AtomicU64>,
    notify: Arc<Notify>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) commit: GroupCommit,
    pub(crate) orchestrations: RwLock<Orchestrations>,
    pub(crate) activities: RwLock<ActivityRegistry>,
    pub(crate) observer: Option<Observer>,
    pub(crate) durability: Durability,
    pub(crate) max_payload: usize,
    /// The largest record written (at most `codec::DECODE_LIMIT`).
    pub(crate) max_record: usize,
    pub(crate) clock: Clock,
    /// Driver tasks of this process, by instance.
    pub(crate) active: Mutex<HashMap<String, Driver>>,
    /// Set (under the `active` lock) by [`Inner::shutdown`]: no driver starts after it.
    pub(crate) shut_down: std::sync::atomic::AtomicBool,
    /// Instances parked because their orchestration is not registered, by orchestration name.
    pub(crate) unregistered: Mutex<HashMap<String, Vec<String>>>,
    /// Striped per-instance locks for read-modify-write of records.
    pub(crate) locks: Vec<Mutex<()>>,
    pub(crate) timer_wake: Notify,
    pub(crate) timer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Bumped whenever an instance reaches a terminal or refused state.
    pub(crate) changes: watch::Sender<u64>,
    /// The in-memory state of suspended instances, by instance: the step count it belongs to
    /// and the state. See [`Inner::keep_resident`].
    pub(crate) resident: Mutex<HashMap<String, (u64, LiveState)>>,
    /// Instances whose pending call names an activity this process does not know, by
    /// activity: they wait for it to be registered rather than fail the call.
    pub(crate) awaiting_activity: Mutex<HashMap<String, Vec<String>>>,
}

/// At most this many suspended instances keep their state in memory; past it, the state of
/// another one is dropped and decoded from its checkpoint when it resumes.
const RESIDENT_LIMIT: usize = 10_000;

/// What an activity task reports to its driver: the step key, the branch, the result.
type Finished = (String, usize, Result<Vec<u8>, ActivityFailure>);

/// An activity attempt: dropping it aborts its task and, at once, tells the thread that runs
/// the activity to stop (an async activity stops at its next `.await`).
struct AbortOnDrop {
    task: tokio::task::AbortHandle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn timer_key(at_ms: u64, id: &str) -> Vec<u8> {
    let mut k = at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// The timer index entries `pending` may have made: its timers, event timeouts and retry
/// backoffs.
fn timer_keys(id: &str, pending: &Pending) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for (leaf, branch) in pending.command.leaves().iter().zip(&pending.branches) {
        match leaf {
            Command::Timer { fire_at_ms } => keys.push(timer_key(*fire_at_ms, id)),
            Command::Event { timeout_at_ms: Some(t), .. } => keys.push(timer_key(*t, id)),
            _ => {}
        }
        if branch.not_before_ms > 0 {
            keys.push(timer_key(branch.not_before_ms, id));
        }
    }
    keys
}

impl Inner {
    // ----- records -----

    fn stripe(&self, id: &str) -> &Mutex<()> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let n = u64::try_from(self.locks.len()).unwrap_or(1).max(1);
        let i = usize::try_from(h % n).unwrap_or(0);
        &self.locks[i]
    }

    pub(crate) fn load(&self, id: &str) -> Result<Option<InstanceRecord>, String> {
        let bytes = self.store.get(Space::Instances, id.as_bytes()).map_err(|e| e.to_string())?;
        bytes.map(|b| InstanceRecord::from_bytes(&b).map_err(|e| e.to_string())).transpose()
    }

    fn put(&self, id: &str, rec: &InstanceRecord) -> Result<(), ClientError> {
        let bytes = self.record_bytes(id, rec)?;
        self.store.put(Space::Instances, id.as_bytes(), &bytes)?;
        Ok(())
    }

    /// Encodes a record about to be written, refusing one that could not be read back: larger
    /// than the record limit, or beyond what the decoder accepts.
    fn record_bytes(&self, id: &str, rec: &InstanceRecord) -> Result<Vec<u8>, ClientError> {
        let bytes = rec.to_bytes().map_err(|e| StoreError::Io(e.to_string()))?;
        let too_large = |reason| ClientError::TooLarge { id: shown_id(id), reason };
        if bytes.len() > self.max_record {
            return Err(too_large(format!(
                "the record would be {} bytes, over the limit of {} bytes ({})",
                bytes.len(),
                self.max_record,
                size_breakdown(rec)
            )));
        }
        if bytes.len().saturating_mul(16) > codec::DECODE_LIMIT {
            InstanceRecord::from_bytes(&bytes).map_err(|e| {
                too_large(format!(
                    "the record of {} bytes would not decode again: {e}",
                    bytes.len()
                ))
            })?;
        }
        Ok(bytes)
    }

    /// Bytes of the record a step may fill with its frame, its command and its output: the
    /// limit less what the record holds besides (an estimate, generous by a kilobyte).
    fn step_budget(&self, rec: &InstanceRecord) -> usize {
        let inbox: usize = rec.inbox.iter().map(|e| e.payload.len() + e.name.len() + 16).sum();
        let held = rec.input.len()
            + inbox
            + rec.custom_status.as_ref().map_or(0, Vec::len)
            + rec.orchestration.len()
            + rec.parent.as_ref().map_or(0, String::len)
            + 1024;
        self.max_record.saturating_sub(held)
    }

    /// The epoch to take before writing what [`make_durable`](Self::make_durable) will wait for.
    pub(crate) fn epoch(&self) -> Epoch {
        self.commit.epoch()
    }

    /// Waits until what was written since `since` is durable. An error means it may be lost:
    /// read the record again before deciding anything on it.
    pub(crate) async fn make_durable(&self, since: Epoch) -> Result<(), StoreError> {
        match self.durability {
            Durability::Flush => self.commit.commit(since).await,
            Durability::Buffered => Ok(()),
        }
    }

    /// Reads, changes and writes a record under its lock; returns what `f` returned, or `None`
    /// when the record does not exist. Not yet durable.
    fn update<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut InstanceRecord) -> T,
    ) -> Result<Option<T>, ClientError> {
        let _guard = lock(self.stripe(id));
        let mut rec = match self.load(id) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(reason) => return Err(ClientError::Unreadable { id: id.into(), reason }),
        };
        let out = f(&mut rec);
        self.put(id, &rec)?;
        Ok(Some(out))
    }

    /// A client's change to an unfinished instance, durable when this returns.
    pub(crate) async fn update_live(
        &self,
        id: &str,
        f: impl FnOnce(&mut InstanceRecord),
    ) -> Result<(), ClientError> {
        self.try_update_live(id, |rec| {
            f(rec);
            Ok(())
        })
        .await
    }

    /// Like [`update_live`](Self::update_live), but `f` may refuse the change: then nothing is
    /// written and its error is returned.
    pub(crate) async fn try_update_live(
        &self,
        id: &str,
        f: impl FnOnce(&mut InstanceRecord) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let since = self.epoch();
        {
            let _guard = lock(self.stripe(id));
            let mut rec = match self.load(id) {
                Ok(Some(r)) => r,
                Ok(None) => return Err(ClientError::NotFound(id.into())),
                Err(reason) => return Err(ClientError::Unreadable { id: id.into(), reason }),
            };
            if rec.is_terminal() {
                return Err(ClientError::Finished { id: id.into(), state: state_of(&rec, true) });
            }
            f(&mut rec)?;
            self.put(id, &rec)?;
        }
        self.make_durable(since).await?;
        Ok(())
    }

    pub(crate) async fn start_encoded(
        self: &Arc<Self>,
        orchestration: &str,
        version: Option<u32>,
        id: &str,
        input: Vec<u8>,
        parent: Option<String>,
    ) -> Result<(), StartError> {
        if input.len() > self.max_payload {
            return Err(StartError::Input {
                id: id.into(),
                reason: format!(
                    "{} bytes exceed the limit of {} bytes",
                    input.len(),
                    self.max_payload
                ),
            });
        }
        let version = match version {
            Some(v) => v,
            None => self.newest(orchestration).map_or(1, |(v, _)| v),
        };
        let rec =
            InstanceRecord::new(orchestration, version, input, self.clock.now_ms(), parent.clone());
        let bytes = self.record_bytes(id, &rec).map_err(|e| match e {
            ClientError::Store(e) => StartError::Store(e),
            e => StartError::Input { id: shown_id(id), reason: e.to_string() },
        })?;
        let since = self.epoch();
        match self.store.put_new(Space::Instances, id.as_bytes(), &bytes)? {
            None => {
                self.make_durable(since).await?;
                tracing::debug!(instance = %id, orchestration, "started");
                self.wake(id);
                Ok(())
            }
            Some(existing) => {
                let existing = InstanceRecord::from_bytes(&existing)
                    .map_err(|e| StartError::Unreadable { id: id.into(), reason: e.to_string() })?;
                if existing.orchestration != orchestration {
                    return Err(StartError::Conflict {
                        id: id.into(),
                        existing: existing.orchestration,
                        requested: orchestration.into(),
                    });
                }
                // A sub-orchestration's id is derived from its parent's; a client that took it
                // first (or another parent) must not hand its result to this parent.
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
                // Another caller may have written it an instant ago: acknowledge only once it is
                // durable.
                self.make_durable(since).await?;
                // An earlier start may have written it and then failed to make it durable before
                // waking it: make sure it runs.
                if !existing.is_terminal() {
                    self.wake(id);
                }
                Ok(())
            }
        }
    }

    pub(crate) async fn purge(&self, id: &str) -> Result<(), ClientError> {
        let since = self.epoch();
        {
            let _guard = lock(self.stripe(id));
            let pending = match self.load(id) {
                Ok(None) => return Err(ClientError::NotFound(id.into())),
                Ok(Some(rec)) if !rec.is_terminal() => return Err(ClientError::Running(id.into())),
                Ok(Some(rec)) => rec.pending,
                Err(_) => None,
            };
            self.store.delete(Space::Instances, id.as_bytes())?;
            if let Some(p) = &pending {
                self.unschedule_timers(id, p);
            }
        }
        self.make_durable(since).await?;
        Ok(())
    }

    pub(crate) fn status_of(&self, id: &str, bytes: &[u8]) -> InstanceStatus {
        match InstanceRecord::from_bytes(bytes) {
            Ok(rec) => {
                let registered = self.orchestration(&rec.orchestration, rec.version).is_some();
                let mut state = state_of(&rec, registered);
                let output = match &rec.state {
                    State::Completed { output } => Some(output.clone()),
                    _ => None,
                };
                if state == InstanceState::Running && rec.suspended {
                    state = InstanceState::Suspended;
                }
                InstanceStatus {
                    id: id.to_owned(),
                    orchestration: rec.orchestration.clone(),
                    version: rec.version,
                    state,
                    steps: rec.steps,
                    point: rec.frame.as_ref().map(|f| (f.point.clone(), f.line)),
                    pending: rec.pending.as_ref().map(|p| p.command.describe()),
                    stored_locals: rec.frame.as_ref().map(|f| f.layout.clone()).unwrap_or_default(),
                    frame_bytes: rec.frame.as_ref().map_or(0, |f| f.locals.len()),
                    created: time_of(rec.created_ms),
                    updated: time_of(rec.updated_ms),
                    parent: rec.parent.clone(),
                    buffered_events: rec.inbox.len(),
                    output,
                    custom_status: rec.custom_status.clone(),
                }
            }
            Err(e) => InstanceStatus {
                id: id.to_owned(),
                orchestration: String::new(),
                version: 0,
                state: InstanceState::Failed {
                    message: format!("instance `{id}`: unreadable record: {e}"),
                },
                steps: 0,
                point: None,
                pending: None,
                stored_locals: Vec::new(),
                frame_bytes: 0,
                created: time_of(0),
                updated: time_of(0),
                parent: None,
                buffered_events: 0,
                output: None,
                custom_status: None,
            },
        }
    }

    // ----- registration and start-up -----

    pub(crate) fn register<O: Orchestration>(self: &Arc<Self>, orchestration: O) {
        let mut registry = Registry::default();
        registry.add_orchestration(|| orchestration);
        self.adopt(registry, true);
    }

    /// Adds what `registry` knows; `replace` replaces registrations of the same names. Wakes
    /// the instances that waited for one of them.
    pub(crate) fn adopt(self: &Arc<Self>, mut registry: Registry, replace: bool) {
        if !replace {
            // Every step hands over what it used: most of it is known already, and a read lock
            // keeps steps of different instances from queueing behind each other.
            if let Ok(a) = self.activities.read() {
                registry.activities.by_name.retain(|name, _| !a.by_name.contains_key(name));
            }
            if let Ok(o) = self.orchestrations.read() {
                registry.orchestrations.retain(|key, _| !o.contains_key(key));
            }
            if registry.activities.by_name.is_empty() && registry.orchestrations.is_empty() {
                return;
            }
        }
        let mut added: Vec<&'static str> = Vec::new();
        if let Ok(mut a) = self.activities.write() {
            for (name, activity) in registry.activities.by_name {
                if replace || !a.by_name.contains_key(name) {
                    a.by_name.insert(name, activity);
                    added.push(name);
                }
            }
        }
        for name in added {
            let waiting = lock(&self.awaiting_activity).remove(name).unwrap_or_default();
            for id in waiting {
                self.wake(&id);
            }
        }
        let mut names: Vec<&'static str> = Vec::new();
        if let Ok(mut o) = self.orchestrations.write() {
            for (key, orchestration) in registry.orchestrations {
                if replace || !o.contains_key(&key) {
                    o.insert(key, orchestration);
                    names.push(key.0);
                }
            }
        }
        for name in names {
            let parked = lock(&self.unregistered).remove(name).unwrap_or_default();
            for id in parked {
                self.wake(&id);
            }
        }
    }

    pub(crate) fn orchestration(
        &self,
        name: &str,
        version: u32,
    ) -> Option<Arc<dyn ErasedOrchestration>> {
        let map = self.orchestrations.read().ok()?;
        map.iter().find(|((n, v), _)| *n == name && *v == version).map(|(_, o)| o.clone())
    }

    /// The newest registered version of `name`, with its input type.
    pub(crate) fn newest(&self, name: &str) -> Option<(u32, &'static str)> {
        let map = self.orchestrations.read().ok()?;
        map.iter()
            .filter(|((n, _), _)| *n == name)
            .max_by_key(|((_, v), _)| *v)
            .map(|((_, v), o)| (*v, o.input_type()))
    }

    /// Wakes every unfinished instance (each re-arms its own timers).
    pub(crate) fn resume_all(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.scan(Space::Instances, after.as_deref(), 1024)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, bytes) in page {
                let id = String::from_utf8_lossy(&key).into_owned();
                match InstanceRecord::from_bytes(&bytes) {
                    Ok(rec) if rec.is_terminal() => {}
                    Ok(_) => self.wake(&id),
                    Err(e) => {
                        tracing::error!(instance = %id, "unreadable record, not resumed: {e}")
                    }
                }
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
        // Waiting clients see the flag.
        self.changes.send_modify(|v| *v += 1);
        let timer = lock(&self.timer_task).take();
        if let Some(t) = timer {
            t.abort();
            let _ = t.await;
        }
        let tasks: Vec<_> = lock(&self.active).drain().map(|(_, d)| d.task).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        // Like the futures of a runtime that shuts down, the kept states are dropped.
        let kept = std::mem::take(&mut *lock(&self.resident));
        drop(kept);
        let _ = self.store.flush();
    }

    // ----- waking -----

    /// Makes sure instance `id` gets looked at: notifies its driver or starts one.
    pub(crate) fn wake(self: &Arc<Self>, id: &str) {
        let mut active = lock(&self.active);
        if self.is_shut_down() {
            // Stays stored; the next runtime over the database resumes it.
            return;
        }
        if let Some(d) = active.get(id)
            && !d.task.is_finished()
        {
            d.wakes.fetch_add(1, Ordering::SeqCst);
            d.notify.notify_one();
            return;
        }
        let wakes = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(Notify::new());
        let span = tracing::info_span!("instance", id = %id);
        let task = tokio::spawn(
            self.clone().drive(id.to_owned(), wakes.clone(), notify.clone()).instrument(span),
        );
        active.insert(id.to_owned(), Driver { task, wakes, notify });
    }

    /// Ends the driver of `id` unless it was woken since `seen`; `true` when it may stop.
    fn may_stop(&self, id: &str, wakes: &AtomicU64, seen: u64) -> bool {
        let mut active = lock(&self.active);
        if wakes.load(Ordering::SeqCst) != seen {
            return false;
        }
        active.remove(id);
        drop(active);
        // Waiters on a refused instance decide by whether a driver still retries it.
        self.changes.send_modify(|v| *v += 1);
        true
    }

    /// Whether a driver of this process works on `id`.
    pub(crate) fn is_driven(&self, id: &str) -> bool {
        lock(&self.active).get(id).is_some_and(|d| !d.task.is_finished())
    }

    pub(crate) fn start_timers(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let next = match inner.store.scan(Space::Timers, None, 64) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!("timer index unreadable: {e}");
                        Vec::new()
                    }
                };
                let now = inner.clock.now_ms();
                let mut earliest = None;
                for (key, _) in &next {
                    let Some((at, id)) = key.split_first_chunk::<8>() else { continue };
                    let at = u64::from_be_bytes(*at);
                    if at <= now {
                        let _ = inner.store.delete(Space::Timers, key);
                        inner.wake(&String::from_utf8_lossy(id));
                    } else {
                        earliest = Some(at);
                        break;
                    }
                }
                if next.iter().any(|(k, _)| {
                    k.split_first_chunk::<8>().is_some_and(|(at, _)| u64::from_be_bytes(*at) <= now)
                }) {
                    continue;
                }
                let clock = inner.clock.clone();
                let woken = Arc::clone(&inner);
                drop(inner);
                let wake = woken.timer_wake.notified();
                tokio::pin!(wake);
                wake.as_mut().enable();
                let woken = Arc::downgrade(&woken);
                match earliest {
                    Some(at) => {
                        tokio::select! {
                            () = clock.sleep_until(at) => {}
                            () = &mut wake => {}
                        }
                    }
                    None => wake.await,
                }
                drop(woken);
            }
        });
        *lock(&self.timer_task) = Some(task);
    }

    /// Removes the timer index entries of a pending command that is over (its instance stepped
    /// on, ended or was purged). An entry a crash leaves behind only wakes the instance for
    /// nothing when it comes due.
    fn unschedule_timers(&self, id: &str, pending: &Pending) {
        for key in timer_keys(id, pending) {
            if let Err(e) = self.store.delete(Space::Timers, &key) {
                tracing::warn!("cannot remove a timer entry: {e}");
            }
        }
    }

    fn schedule_timer(&self, at_ms: u64, id: &str) {
        if let Err(e) = self.store.put(Space::Timers, &timer_key(at_ms, id), &[]) {
            tracing::error!("cannot index timer: {e}");
        }
        self.timer_wake.notify_one();
    }

    // ----- the driver -----

    async fn drive(self: Arc<Self>, id: String, wakes: Arc<AtomicU64>, notify: Arc<Notify>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Finished>();
        // Activity tasks of the current step, by branch; dropped (and aborted) with the driver.
        let mut running: HashMap<usize, AbortOnDrop> = HashMap::new();
        let mut running_key = String::new();
        let mut finished: HashMap<usize, Result<Vec<u8>, ActivityFailure>> = HashMap::new();
        loop {
            let seen = wakes.load(Ordering::SeqCst);
            while let Ok((key, branch, result)) = rx.try_recv() {
                if key == running_key {
                    running.remove(&branch);
                    finished.insert(branch, result);
                }
            }
            let rec = match self.load(&id) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("instance `{id}`: unreadable record, not run: {e}");
                    break;
                }
            };
            if rec.is_terminal() {
                self.forget_resident(&id);
                break;
            }
            // A cancellation applies at once, even to a suspended instance.
            if let Some(reason) = rec.cancel.clone() {
                self.apply_cancel(&id, &reason).await;
                break;
            }
            if rec.suspended {
                running.clear();
                if self.may_stop(&id, &wakes, seen) {
                    return;
                }
                continue;
            }
            let Some(orchestration) = self.orchestration(&rec.orchestration, rec.version) else {
                tracing::warn!(
                    "orchestration `{}` version {} is not registered; parked",
                    rec.orchestration,
                    rec.version
                );
                lock(&self.unregistered)
                    .entry(rec.orchestration.clone())
                    .or_default()
                    .push(id.clone());
                if self.may_stop(&id, &wakes, seen) {
                    return;
                }
                continue;
            };
            let Some(pending) = rec.pending.clone() else {
                // The first step, or the first after continue-as-new.
                let outcome =
                    self.run_step(&id, &rec, &orchestration, None, Vec::new(), &notify).await;
                if matches!(outcome, Some(StepOutcome::Incompatible(_)))
                    && self.may_stop(&id, &wakes, seen)
                {
                    return;
                }
                continue;
            };
            if pending.key != running_key {
                running.clear();
                finished.clear();
                running_key = pending.key.clone();
            }
            let progress = self.resolve(&id, &rec, &pending, &mut finished).await;
            if let Some(completion) = progress.completion {
                running.clear();
                finished.clear();
                let outcome = self
                    .run_step(&id, &rec, &orchestration, Some(completion), progress.taken, &notify)
                    .await;
                if matches!(outcome, Some(StepOutcome::Incompatible(_)))
                    && self.may_stop(&id, &wakes, seen)
                {
                    // Refused by this build: stays stored until a compatible build runs it.
                    return;
                }
                continue;
            }
            if progress.changed {
                match self
                    .save_branches(&id, &pending.key, &progress.branches, &progress.taken)
                    .await
                {
                    Ok(()) => self.report_branches(&id, rec.steps, &pending, &progress.branches),
                    Err(ClientError::TooLarge { reason, .. }) => {
                        // The branches' results together do not fit: retrying cannot help.
                        self.fail_oversized(
                            &id,
                            &rec,
                            &format!("cannot record a result: {reason}"),
                        )
                        .await;
                    }
                    Err(e) => tracing::error!("cannot record branch progress: {e}"),
                }
                continue;
            }
            // Start the activities that may run now.
            let now = self.clock.now_ms();
            let mut next_wake: Option<u64> = None;
            let mut look_again = false;
            for (i, (leaf, branch)) in
                pending.command.leaves().iter().zip(&progress.branches).enumerate()
            {
                if branch.done.is_some() {
                    continue;
                }
                match leaf {
                    Command::Activity { name, .. }
                        if !running.contains_key(&i)
                            && !finished.contains_key(&i)
                            && !self.knows_activity(name) =>
                    {
                        // A call issued by another process (or build) of an activity this one
                        // has not registered: wait for the registration instead of failing the
                        // call. Checked again under the lock `adopt` drains after registering.
                        let mut waiting = lock(&self.awaiting_activity);
                        if self.knows_activity(name) {
                            look_again = true;
                        } else {
                            tracing::warn!(
                                "activity `{name}` is not registered in this process; the \
                                 instance waits until it is (`RuntimeBuilder::activity`)"
                            );
                            waiting.entry(name.clone()).or_default().push(id.clone());
                        }
                    }
                    Command::Activity { name, input, policy }
                        if !running.contains_key(&i) && !finished.contains_key(&i) =>
                    {
                        if branch.not_before_ms > now {
                            next_wake = min_some(next_wake, branch.not_before_ms);
                            continue;
                        }
                        let attempt = branch.failed_attempts + 1;
                        let task = self.spawn_attempt(
                            &id,
                            name,
                            input,
                            policy,
                            &pending.key,
                            i,
                            attempt,
                            tx.clone(),
                        );
                        running.insert(i, task);
                    }
                    Command::Timer { fire_at_ms } => next_wake = min_some(next_wake, *fire_at_ms),
                    Command::Event { timeout_at_ms: Some(t), .. } => {
                        next_wake = min_some(next_wake, *t)
                    }
                    _ => {}
                }
            }
            if look_again {
                continue;
            }
            if running.is_empty() && finished.is_empty() {
                if let Some(at) = next_wake {
                    self.schedule_timer(at, &id);
                }
                if self.may_stop(&id, &wakes, seen) {
                    return;
                }
                continue;
            }
            if !finished.is_empty() {
                continue;
            }
            let clock = self.clock.clone();
            tokio::select! {
                Some((key, branch, result)) = rx.recv() => {
                    if key == running_key {
                        running.remove(&branch);
                        finished.insert(branch, result);
                    }
                }
                () = notify.notified() => {}
                () = async { match next_wake { Some(at) => clock.sleep_until(at).await, None => std::future::pending().await } } => {}
            }
        }
        let seen = wakes.load(Ordering::SeqCst);
        if !self.may_stop(&id, &wakes, seen) {
            // Woken while finishing: look again.
            let this = self.clone();
            lock(&self.active).remove(&id);
            this.wake(&id);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_attempt(
        &self,
        id: &str,
        name: &str,
        input: &[u8],
        policy: &RetryPolicy,
        key: &str,
        branch: usize,
        attempt: u32,
        tx: mpsc::UnboundedSender<Finished>,
    ) -> AbortOnDrop {
        let activity = self
            .activities
            .read()
            .ok()
            .and_then(|a| a.by_name.get_key_value(name).map(|(n, act)| (*n, act.clone())));
        let step_key = key.to_owned();
        let idempotency_key = if branch == 0 { key.to_owned() } else { format!("{key}.{branch}") };
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
        let clock = self.clock.clone();
        let deadline = timeout.map(|limit| clock.now_ms().saturating_add(ms(limit)));
        let span = tracing::info_span!("activity", name = %name, attempt);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(
            async move {
                let result = match fut {
                    None => Err(ActivityFailure::NotRegistered(name)),
                    Some(fut) => {
                        // The attempt runs on a thread of its own (tokio's blocking pool), so an
                        // activity that blocks its thread stalls only itself: its timeout is
                        // enforced from here and fires on time. When the driver drops the
                        // attempt (its result arrived, the branch is abandoned, the runtime shuts
                        // down), `stop` is dropped: an async activity stops at its next
                        // `.await`; a blocking one runs on until it returns, unheard.
                        let rt = tokio::runtime::Handle::current();
                        let inner = tokio::task::spawn_blocking(move || {
                            rt.block_on(async move {
                                tokio::select! {
                                    biased;
                                    _ = stopped => None,
                                    r = fut => Some(r),
                                }
                            })
                        });
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
                            Some(Ok(None)) => Err(ActivityFailure::Panicked(
                                "activity attempt was stopped".into(),
                            )),
                            Some(Err(e)) if e.is_panic() => Err(ActivityFailure::Panicked(
                                panic_message(e.into_panic().as_ref()),
                            )),
                            Some(Err(e)) => {
                                Err(ActivityFailure::Panicked(format!("activity task ended: {e}")))
                            }
                        }
                    }
                };
                let _ = tx.send((step_key, branch, result));
            }
            .instrument(span),
        );
        AbortOnDrop { task: handle.abort_handle(), _stop: stop }
    }

    /// Works out which branches of `pending` are done now.
    async fn resolve(
        self: &Arc<Self>,
        id: &str,
        rec: &InstanceRecord,
        pending: &Pending,
        finished: &mut HashMap<usize, Result<Vec<u8>, ActivityFailure>>,
    ) -> Progress {
        let now = self.clock.now_ms();
        let mut branches = pending.branches.clone();
        let mut taken = Vec::new();
        let mut changed = false;
        let mut inbox: Vec<_> = rec.inbox.clone();
        // Room for the results of activities: what the record has left, less the results of
        // this command's branches already stored.
        let mut room = self.step_budget(rec).saturating_sub(
            branches.iter().filter_map(|b| b.done.as_ref()).map(completion_size).sum(),
        );
        for (i, leaf) in pending.command.leaves().iter().enumerate() {
            let Some(branch) = branches.get_mut(i) else { continue };
            if branch.done.is_some() {
                continue;
            }
            match leaf {
                Command::Timer { fire_at_ms } if *fire_at_ms <= now => {
                    branch.done = Some(Completion::Timer);
                    changed = true;
                }
                Command::Event { name, timeout_at_ms } => {
                    if let Some(pos) = inbox.iter().position(|e| &e.name == name) {
                        let ev = inbox.remove(pos);
                        taken.push(ev.seq);
                        branch.done = Some(Completion::Event {
                            name: name.clone(),
                            payload: Some(ev.payload),
                        });
                        changed = true;
                    } else if timeout_at_ms.is_some_and(|t| t <= now) {
                        branch.done = Some(Completion::Event { name: name.clone(), payload: None });
                        changed = true;
                    }
                }
                Command::Child { orchestration, input, id: chosen } => {
                    let child_id = branch
                        .child_id
                        .clone()
                        .unwrap_or_else(|| derived_id(&format!("{id}:child-{i}")));
                    if !branch.child_started
                        && let Some(reason) = chosen.as_deref().and_then(|c| validate_id(c).err())
                    {
                        branch.done = Some(Completion::Child(Err(ChildFailure::NotStarted(
                            format!("invalid instance id `{}`: {reason}", shown_id(&child_id)),
                        ))));
                        branch.child_started = true;
                        changed = true;
                        continue;
                    }
                    if !branch.child_started {
                        match self
                            .start_encoded(
                                orchestration,
                                None,
                                &child_id,
                                input.clone(),
                                Some(id.to_owned()),
                            )
                            .await
                        {
                            Ok(()) => {}
                            Err(e) => {
                                branch.done = Some(Completion::Child(Err(
                                    ChildFailure::NotStarted(e.to_string()),
                                )))
                            }
                        }
                        branch.child_started = true;
                        changed = true;
                    }
                    if branch.done.is_none()
                        && let Ok(Some(child)) = self.load(&child_id)
                    {
                        let result = match child.state {
                            State::Completed { output } => Some(Ok(output)),
                            State::Failed { message, payload } => {
                                Some(Err(ChildFailure::Failed { message, payload }))
                            }
                            State::Cancelled { reason } => {
                                Some(Err(ChildFailure::Cancelled(reason)))
                            }
                            State::Running | State::Incompatible { .. } => None,
                        };
                        if let Some(r) = result {
                            branch.done = Some(Completion::Child(r));
                            changed = true;
                        }
                    }
                }
                Command::Activity { name, policy, .. } => {
                    if let Some(mut result) = finished.remove(&i) {
                        if result.is_err() {
                            metrics::counter!("durable_activity_failures_total", "activity" => name.clone())
                                .increment(1);
                        }
                        if let Ok(bytes) = &result {
                            if bytes.len() > room {
                                result = Err(ActivityFailure::Rejected(format!(
                                    "its result of {} bytes does not fit in the instance's record \
                                     ({room} bytes left of the limit of {} bytes)",
                                    bytes.len(),
                                    self.max_record
                                )));
                            } else {
                                room -= bytes.len();
                            }
                        }
                        let attempt = branch.failed_attempts + 1;
                        match result {
                            Err(f) if attempt < policy.max_attempts && retryable(&f) => {
                                tracing::info!(
                                    attempt,
                                    "activity attempt failed, will retry: {f:?}"
                                );
                                branch.failed_attempts = attempt;
                                branch.not_before_ms =
                                    now.saturating_add(ms(policy.backoff(attempt)));
                            }
                            result => branch.done = Some(Completion::Activity(result)),
                        }
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        let completion = match &pending.command {
            Command::Join(_) => branches.iter().all(|b| b.done.is_some()).then(|| {
                Completion::Join(branches.iter().filter_map(|b| b.done.clone()).collect())
            }),
            Command::Race(_) => branches.iter().enumerate().find_map(|(i, b)| {
                b.done.clone().map(|c| Completion::Race {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    completion: Box::new(c),
                })
            }),
            _ => branches.first().and_then(|b| b.done.clone()),
        };
        Progress { completion, branches, taken, changed }
    }

    /// Records the progress of a join's branches (and the events they took).
    async fn save_branches(
        &self,
        id: &str,
        key: &str,
        branches: &[Branch],
        taken: &[u64],
    ) -> Result<(), ClientError> {
        let since = self.epoch();
        self.update(id, |rec| {
            if let Some(p) = rec.pending.as_mut().filter(|p| p.key == key) {
                p.branches = branches.to_vec();
                rec.inbox.retain(|e| !taken.contains(&e.seq));
                rec.updated_ms = self.clock.now_ms();
            }
        })?;
        self.make_durable(since).await?;
        Ok(())
    }

    /// Tells the observer which branches got a stored result just now.
    fn report_branches(&self, id: &str, step: u64, before: &Pending, after: &[Branch]) {
        let Some(observer) = &self.observer else { return };
        let leaves = before.command.leaves();
        for (i, (old, new)) in before.branches.iter().zip(after).enumerate() {
            if old.done.is_none() && new.done.is_some() {
                observer(&StepEvent {
                    instance: id.to_owned(),
                    step,
                    completed: leaves.get(i).map(Command::describe),
                    outcome: StepOutcome::BranchRecorded(i),
                });
            }
        }
    }

    /// Runs the orchestration's code of one step on a thread of tokio's blocking pool, so that a
    /// step that computes for long (or never returns) holds that thread only: timers, commits,
    /// clients and the other instances go on. While it runs, a cancellation of the instance is
    /// applied at once; the step's result, if it ever comes, is then discarded.
    async fn run_code(
        self: &Arc<Self>,
        id: &str,
        orchestration: &Arc<dyn ErasedOrchestration>,
        ctx: &Ctx,
        resume: (Option<Frame>, Vec<u8>, Option<Completion>, Option<LiveState>),
        budget: usize,
        notify: &Notify,
    ) -> Option<std::thread::Result<StepResult>> {
        let orchestration = orchestration.clone();
        let step_ctx = ctx.clone();
        let span = tracing::Span::current();
        let mut job = tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let resume = match (&resume.0, resume.2, resume.3) {
                    (Some(frame), Some(completion), Some(state)) => {
                        Resume::Live { frame, state, completion }
                    }
                    (Some(frame), Some(completion), None) => Resume::At { frame, completion },
                    _ => Resume::Start(&resume.1),
                };
                crate::__support_v1::with_frame_budget(budget, || {
                    std::panic::catch_unwind(AssertUnwindSafe(|| {
                        orchestration.step(&step_ctx, resume)
                    }))
                })
            })
        });
        loop {
            tokio::select! {
                joined = &mut job => return joined.ok(),
                () = notify.notified() => {
                    if let Ok(Some(rec)) = self.load(id)
                        && let Some(reason) = rec.cancel
                    {
                        tracing::warn!("cancelled while its step still runs; the step's result will be discarded");
                        self.apply_cancel(id, &reason).await;
                        return None;
                    }
                }
            }
        }
    }

    /// Runs one step of the orchestration and checkpoints the result; retries the write until
    /// it succeeds (the step is not done before).
    async fn run_step(
        self: &Arc<Self>,
        id: &str,
        rec: &InstanceRecord,
        orchestration: &Arc<dyn ErasedOrchestration>,
        completion: Option<Completion>,
        taken: Vec<u64>,
        notify: &Notify,
    ) -> Option<StepOutcome> {
        let completed = rec.pending.as_ref().map(|p| p.command.describe());
        let mut delay = Duration::from_millis(10);
        if rec.frame.is_some() && completion.is_none() {
            tracing::error!("instance `{id}`: a frame without a completion");
            return None;
        }
        // The state the previous step of this process left, if it is that of this record.
        let mut live = self.take_resident(id, rec.steps);
        loop {
            let now = self.clock.now_ms();
            let started = std::time::Instant::now();
            let ctx = Ctx::new(id, now, rec.steps + 1);
            let span = tracing::debug_span!("step", n = rec.steps + 1);
            let resume = match &rec.frame {
                Some(frame) => (Some(frame.clone()), Vec::new(), completion.clone(), live.take()),
                None => (None, rec.input.clone(), None, None),
            };
            let result = self
                .run_code(id, orchestration, &ctx, resume, self.step_budget(rec), notify)
                .instrument(span)
                .await?;
            // Activities and children this step's operations use, however they were named.
            self.adopt(ctx.take_used(), false);
            let (result, kept) = match result {
                Ok(StepResult::Suspend { frame, command, live }) => {
                    (Ok(StepResult::Suspend { frame, command, live: None }), live)
                }
                other => (other, None),
            };
            let status = ctx.take_status();
            let since = self.epoch();
            let applied = self.update(id, |latest| {
                let outcome = apply_step(id, latest, rec.steps, now, result, status, &taken);
                if let (Some(StepOutcome::Incompatible(_)), Some(c)) = (&outcome, &completion) {
                    keep_completion(latest, c);
                }
                outcome
            });
            let applied = match applied {
                // The checkpoint cannot be stored: the instance fails instead, saying why.
                Err(ClientError::TooLarge { reason, .. }) => self.update(id, |latest| {
                    fail_step(id, latest, rec.steps, now, &format!("cannot checkpoint: {reason}"))
                }),
                other => other,
            };
            let outcome = match applied {
                Ok(Some(Some(outcome))) => outcome,
                Ok(_) => return None,
                Err(e) => {
                    tracing::error!("checkpoint failed, retrying the step: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // The record is written; until it is durable nothing may depend on it. A failed
            // flush may have discarded it: run the step again on what the store holds.
            if let Err(e) = self.make_durable(since).await {
                if let StoreError::Failed(_) = e {
                    // Nothing can become durable any more: stop, and let waiting clients see it.
                    tracing::error!("instance `{id}` stops: {e}");
                    self.changes.send_modify(|v| *v += 1);
                    return None;
                }
                tracing::error!("checkpoint not durable, running the step again: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
            let orch = rec.orchestration.clone();
            metrics::counter!("durable_steps_total", "orchestration" => orch.clone()).increment(1);
            metrics::histogram!("durable_step_seconds", "orchestration" => orch)
                .record(started.elapsed().as_secs_f64());
            if let Some(p) = &rec.pending {
                self.unschedule_timers(id, p);
            }
            if let (StepOutcome::Suspended(_), Some(state)) = (&outcome, kept) {
                self.keep_resident(id, rec.steps + 1, state);
            }
            let terminal = matches!(
                outcome,
                StepOutcome::Completed
                    | StepOutcome::Failed(_)
                    | StepOutcome::Cancelled(_)
                    | StepOutcome::Incompatible(_)
            );
            if let Some(observer) = &self.observer {
                observer(&StepEvent {
                    instance: id.to_owned(),
                    step: rec.steps + 1,
                    completed,
                    outcome: outcome.clone(),
                });
            }
            if terminal {
                self.changes.send_modify(|v| *v += 1);
                if let Some(parent) = &rec.parent {
                    self.wake(parent);
                }
            }
            return Some(outcome);
        }
    }

    /// Fails an instance whose record cannot hold what it must store next.
    async fn fail_oversized(self: &Arc<Self>, id: &str, rec: &InstanceRecord, why: &str) {
        let now = self.clock.now_ms();
        let since = self.epoch();
        match self.update(id, |latest| fail_step(id, latest, rec.steps, now, why)) {
            Ok(Some(Some(outcome))) => {
                if let Err(e) = self.make_durable(since).await {
                    tracing::error!("cannot make the failure durable: {e}");
                }
                if let Some(observer) = &self.observer {
                    observer(&StepEvent {
                        instance: id.to_owned(),
                        step: rec.steps + 1,
                        completed: None,
                        outcome,
                    });
                }
                self.changes.send_modify(|v| *v += 1);
                if let Some(parent) = &rec.parent {
                    self.wake(parent);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!("cannot record the failure: {e}"),
        }
    }

    fn knows_activity(&self, name: &str) -> bool {
        self.activities.read().is_ok_and(|a| a.by_name.contains_key(name))
    }

    /// Keeps the state a step suspended with for the next step of this process. Values then
    /// live on exactly as in plain Rust; only a restart decodes them from the checkpoint.
    fn keep_resident(&self, id: &str, steps: u64, state: LiveState) {
        let evicted = {
            let mut resident = lock(&self.resident);
            let evicted = if resident.len() >= RESIDENT_LIMIT && !resident.contains_key(id) {
                let other = resident.keys().next().cloned();
                other.and_then(|k| resident.remove(&k))
            } else {
                None
            };
            (resident.insert(id.to_owned(), (steps, state)), evicted)
        };
        // Dropped outside the lock: a value's `Drop` may take its time.
        drop(evicted);
    }

    /// The kept state of `id` if it belongs to the record after `steps` steps.
    fn take_resident(&self, id: &str, steps: u64) -> Option<LiveState> {
        let kept = lock(&self.resident).remove(id);
        match kept {
            Some((s, state)) if s == steps => Some(state),
            _ => None,
        }
    }

    /// Drops the kept state of an instance that will not run another step here.
    pub(crate) fn forget_resident(&self, id: &str) {
        let kept = lock(&self.resident).remove(id);
        drop(kept);
    }

    async fn apply_cancel(self: &Arc<Self>, id: &str, reason: &str) {
        let mut children = Vec::new();
        let since = self.epoch();
        let mut pending = None;
        let applied = self.update(id, |rec| {
            if rec.is_terminal() {
                return None;
            }
            pending = rec.pending.clone();
            if let Some(p) = &rec.pending {
                for (leaf, b) in p.command.leaves().iter().zip(&p.branches) {
                    if let (Command::Child { .. }, Some(child), None) = (leaf, &b.child_id, &b.done)
                    {
                        children.push(child.clone());
                    }
                }
            }
            rec.state = State::Cancelled { reason: reason.to_owned() };
            rec.updated_ms = self.clock.now_ms();
            Some(rec.parent.clone())
        });
        let parent = match applied {
            Ok(Some(Some(parent))) => parent,
            Ok(_) => return,
            Err(e) => {
                tracing::error!("cannot cancel: {e}");
                return;
            }
        };
        if let Err(e) = self.make_durable(since).await {
            // Not durable: the request stays in the record, and the next run applies it.
            tracing::error!("cannot make the cancellation durable: {e}");
            return;
        }
        if let Some(p) = &pending {
            self.unschedule_timers(id, p);
        }
        tracing::info!(instance = %id, "cancelled: {reason}");
        self.forget_resident(id);
        for child in children {
            let _ = Box::pin(self.update_live(&child, |r| {
                // A cancellation already asked for wins, as for clients.
                r.cancel.get_or_insert_with(|| format!("parent cancelled: {reason}"));
            }))
            .await;
            self.wake(&child);
        }
        if let Some(observer) = &self.observer {
            observer(&StepEvent {
                instance: id.to_owned(),
                step: 0,
                completed: None,
                outcome: StepOutcome::Cancelled(reason.to_owned()),
            });
        }
        self.changes.send_modify(|v| *v += 1);
        if let Some(parent) = parent {
            self.wake(&parent);
        }
    }
}

struct Progress {
    completion: Option<Completion>,
    branches: Vec<Branch>,
    taken: Vec<u64>,
    changed: bool,
}

fn min_some(a: Option<u64>, b: u64) -> Option<u64> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Applies a step's result to the latest record; `None` when the record moved on meanwhile.
fn apply_step(
    id: &str,
    rec: &mut InstanceRecord,
    expected_steps: u64,
    now: u64,
    result: std::thread::Result<StepResult>,
    status: Option<Vec<u8>>,
    taken: &[u64],
) -> Option<StepOutcome> {
    if rec.steps != expected_steps || rec.is_terminal() {
        return None;
    }
    rec.updated_ms = now;
    rec.inbox.retain(|e| !taken.contains(&e.seq));
    if let Some(s) = status {
        rec.custom_status = Some(s);
    }
    if matches!(rec.state, State::Incompatible { .. }) {
        rec.state = State::Running;
    }
    let outcome = match result {
        Ok(StepResult::Suspend { command: Command::ContinueAsNew { input }, .. }) => {
            rec.steps += 1;
            rec.input = input;
            rec.frame = None;
            rec.pending = None;
            StepOutcome::ContinuedAsNew
        }
        Ok(StepResult::Suspend { frame, command, .. }) => {
            rec.steps += 1;
            let key = format!("{id}:{}", rec.steps);
            let branches = command
                .leaves()
                .iter()
                .enumerate()
                .map(|(i, leaf)| Branch {
                    child_id: match leaf {
                        Command::Child { id: Some(chosen), .. } => Some(chosen.clone()),
                        Command::Child { .. } if command.leaves().len() == 1 => {
                            Some(derived_id(&key))
                        }
                        Command::Child { .. } => Some(derived_id(&format!("{key}.{i}"))),
                        _ => None,
                    },
                    ..Branch::default()
                })
                .collect();
            let next = command.describe();
            rec.pending = Some(Pending { command, key, branches });
            rec.frame = Some(frame);
            StepOutcome::Suspended(next)
        }
        Ok(StepResult::Complete(output)) => {
            rec.steps += 1;
            rec.state = State::Completed { output };
            rec.frame = None;
            rec.pending = None;
            StepOutcome::Completed
        }
        Ok(StepResult::Fail { message, payload }) => {
            rec.steps += 1;
            rec.state = State::Failed { message: message.clone(), payload: Some(payload) };
            rec.frame = None;
            rec.pending = None;
            StepOutcome::Failed(message)
        }
        Ok(StepResult::Fault(Fault::Incompatible(m))) => {
            let message = format!("instance `{id}` of orchestration `{}`: {m}", rec.orchestration);
            tracing::warn!("{message}");
            rec.state = State::Incompatible { message: message.clone() };
            StepOutcome::Incompatible(message)
        }
        Ok(StepResult::Fault(f)) => {
            let message = format!("instance `{id}` of orchestration `{}`: {f}", rec.orchestration);
            tracing::error!("{message}");
            rec.state = State::Failed { message: message.clone(), payload: None };
            StepOutcome::Failed(message)
        }
        Err(panic) => {
            let message = format!(
                "instance `{id}`: orchestration `{}` panicked: {}",
                rec.orchestration,
                panic_message(panic.as_ref())
            );
            tracing::error!("{message}");
            rec.state = State::Failed { message: message.clone(), payload: None };
            StepOutcome::Failed(message)
        }
    };
    Some(outcome)
}

/// Fails an instance whose step produced a checkpoint that cannot be stored; `None` when the
/// record moved on meanwhile.
fn fail_step(
    id: &str,
    rec: &mut InstanceRecord,
    expected_steps: u64,
    now: u64,
    why: &str,
) -> Option<StepOutcome> {
    if rec.steps != expected_steps || rec.is_terminal() {
        return None;
    }
    let message = format!("instance `{id}` of orchestration `{}`: {why}", rec.orchestration);
    tracing::error!("{message}");
    rec.steps += 1;
    rec.updated_ms = now;
    rec.state = State::Failed { message: message.clone(), payload: None };
    rec.frame = None;
    rec.pending = None;
    Some(StepOutcome::Failed(message))
}

/// The stored bytes of a branch's result.
fn completion_size(c: &Completion) -> usize {
    match c {
        Completion::Activity(Ok(b)) | Completion::Child(Ok(b)) => b.len(),
        Completion::Event { payload: Some(b), .. } => b.len(),
        Completion::Activity(Err(ActivityFailure::Error { payload, .. })) => payload.len(),
        Completion::Child(Err(ChildFailure::Failed { payload: Some(p), .. })) => p.len(),
        _ => 0,
    }
}

/// What takes the room in a record, largest first, for the message of a refused write.
fn size_breakdown(rec: &InstanceRecord) -> String {
    let mut parts: Vec<(usize, String)> = Vec::new();
    if let Some(f) = &rec.frame {
        let names: Vec<&str> = f.layout.iter().map(|(n, _)| n.as_str()).collect();
        parts.push((
            f.locals.len(),
            format!(
                "the locals at suspension point `{}` (line {}: {})",
                f.point,
                f.line,
                names.join(", ")
            ),
        ));
    }
    if let Some(p) = &rec.pending {
        let size = codec::encode(&p.command).map_or(0, |b| b.len());
        parts.push((size, format!("the command `{}`", p.command.describe())));
    }
    parts.push((rec.input.len(), "the input".into()));
    if let Some(s) = &rec.custom_status {
        parts.push((s.len(), "the custom status".into()));
    }
    let inbox: usize = rec.inbox.iter().map(|e| e.payload.len()).sum();
    parts.push((inbox, format!("{} buffered events", rec.inbox.len())));
    match &rec.state {
        State::Completed { output } => parts.push((output.len(), "the output".into())),
        State::Failed { payload: Some(p), .. } => parts.push((p.len(), "the error value".into())),
        _ => {}
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{what}: {n} bytes"))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn state_of(rec: &InstanceRecord, registered: bool) -> InstanceState {
    match &rec.state {
        State::Running if !registered => InstanceState::Unregistered,
        State::Running => InstanceState::Running,
        State::Completed { .. } => InstanceState::Completed,
        State::Failed { message, .. } => InstanceState::Failed { message: message.clone() },
        State::Cancelled { reason } => InstanceState::Cancelled { reason: reason.clone() },
        State::Incompatible { message } => InstanceState::Incompatible { message: message.clone() },
    }
}

fn retryable(failure: &ActivityFailure) -> bool {
    !matches!(
        failure,
        ActivityFailure::NotRegistered(_) | ActivityFailure::Error { permanent: true, .. }
    )
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Keeps the completion of a step this build refused, so that a compatible build resumes with it
/// instead of running the operation again.
fn keep_completion(rec: &mut InstanceRecord, completion: &Completion) {
    let Some(p) = rec.pending.as_mut() else { return };
    match completion {
        Completion::Join(all) => {
            for (b, c) in p.branches.iter_mut().zip(all) {
                b.done = Some(c.clone());
            }
        }
        Completion::Race { index, completion } => {
            let i = usize::try_from(*index).unwrap_or(usize::MAX);
            if let Some(b) = p.branches.get_mut(i) {
                b.done = Some((**completion).clone());
            }
        }
        other => {
            if let Some(b) = p.branches.first_mut() {
                b.done = Some(other.clone());
            }
        }
    }
}

/// The id of a sub-orchestration named after `key` (its parent's id and step): marked with
/// [`DERIVED_ID_PREFIX`](crate::runtime::DERIVED_ID_PREFIX), which chosen ids cannot carry.
fn derived_id(key: &str) -> String {
    let prefix = crate::runtime::DERIVED_ID_PREFIX;
    if key.starts_with(prefix) { key.to_owned() } else { format!("{prefix}{key}") }
}
