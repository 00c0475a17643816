//! The runtime: opens a store, runs instances on tokio, checkpoints every step.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::Instrument;

use crate::activity::{ActivityContext, ActivityRegistry};
use crate::codec;
use crate::commit::GroupCommit;
use crate::op::{ActivityFailure, Command, Completion, RetryPolicy};
use crate::orchestration::{
    Ctx, ErasedOrch, ErasedOrchestration, Fault, Orchestration, OrchestrationOutput, Resume,
    StepResult,
};
use crate::record::{InstanceRecord, Pending, State};
use crate::store::{SledStore, Space, Store, StoreError};

/// Opening a runtime failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The store could not be opened (held by another process, unreadable…).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The commit thread could not be started.
    #[error("cannot start the commit thread: {0}")]
    Thread(String),
}

/// Starting an instance failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The id is taken by an instance of another orchestration.
    #[error("instance `{id}` already exists as orchestration `{existing}`, not `{requested}`")]
    Conflict {
        /// The instance id.
        id: String,
        /// The orchestration of the existing instance.
        existing: String,
        /// The orchestration asked for.
        requested: String,
    },
    /// The input could not be encoded or is too large.
    #[error("input of instance `{id}`: {reason}")]
    Input {
        /// The instance id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The existing record under this id cannot be read.
    #[error("instance `{id}` exists but its record cannot be read: {reason}")]
    Unreadable {
        /// The instance id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Waiting for an instance's result failed, or the instance did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError<E> {
    /// The orchestration returned this error.
    #[error("orchestration failed: {message}")]
    Failed {
        /// The error value.
        error: E,
        /// Its `Display`.
        message: String,
    },
    /// The instance failed without an error value: a panic, a corrupt checkpoint, a value that
    /// cannot be stored.
    #[error("{0}")]
    Faulted(String),
    /// This build refused to resume the instance; it stays stored.
    #[error("{0}")]
    Incompatible(String),
    /// No instance has this id.
    #[error("no instance `{0}`")]
    NotFound(String),
    /// The stored output does not decode as the orchestration's output type.
    #[error("output of instance `{0}` does not decode: {1}")]
    Output(String, String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime shut down while waiting.
    #[error("the runtime shut down")]
    Shutdown,
}

/// How durable a checkpoint is before its commands go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Flushed to disk (group commit): survives `kill -9`. The default.
    #[default]
    Flush,
    /// Left to the store's background flushing (sled: every 500 ms). A `kill -9` can lose the
    /// last steps of any instance, and activities of lost steps run again. For tests and
    /// throw-away work only.
    Buffered,
}

/// The state of an instance, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceState {
    /// Runs or waits.
    Running,
    /// Returned `Ok`.
    Completed,
    /// Returned `Err`, panicked, or its checkpoint could not be used.
    Failed {
        /// What went wrong.
        message: String,
    },
    /// This build refused to resume it; it stays stored and resumes under a compatible build.
    Incompatible {
        /// What differs.
        message: String,
    },
    /// Its orchestration is not registered in this process; it resumes once it is.
    Unregistered,
}

impl InstanceState {
    /// Completed or failed: nothing more will happen.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            InstanceState::Completed | InstanceState::Failed { .. }
        )
    }
}

/// What a client can read about an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// The instance id.
    pub id: String,
    /// The orchestration's stored name.
    pub orchestration: String,
    /// Where it stands.
    pub state: InstanceState,
    /// Checkpoints written since the start.
    pub steps: u64,
    /// The current suspension point: identity and source line.
    pub point: Option<(String, u32)>,
    /// The command the current point issued, described.
    pub pending: Option<String>,
    /// Creation time.
    pub created: SystemTime,
    /// Time of the last checkpoint.
    pub updated: SystemTime,
    output: Option<Vec<u8>>,
}

impl InstanceStatus {
    /// The output of a completed instance, decoded as `T`.
    pub fn output<T: crate::Persistable>(&self) -> Option<Result<T, codec::CodecError>> {
        self.output.as_deref().map(codec::decode)
    }
}

/// Reported after each checkpoint is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepEvent {
    /// The instance.
    pub instance: String,
    /// The checkpoint's number (1 for the first after the start).
    pub step: u64,
    /// The command whose completion this step consumed, described.
    pub completed: Option<String>,
    /// What the step led to.
    pub outcome: StepOutcome,
}

/// Where a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepOutcome {
    /// Parked, issuing this command.
    Suspended(String),
    /// The instance completed.
    Completed,
    /// The instance failed.
    Failed(String),
    /// The instance was refused by this build.
    Incompatible(String),
}

type Observer = Arc<dyn Fn(&StepEvent) + Send + Sync>;

/// Configures and opens a [`Runtime`].
pub struct RuntimeBuilder {
    path: PathBuf,
    store: Option<Arc<dyn Store>>,
    orchestrations: HashMap<&'static str, Arc<dyn ErasedOrchestration>>,
    activities: ActivityRegistry,
    observer: Option<Observer>,
    durability: Durability,
    max_payload: usize,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("path", &self.path)
            .field(
                "orchestrations",
                &self.orchestrations.keys().collect::<Vec<_>>(),
            )
            .field("activities", &self.activities)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Registers an orchestration and the activities it calls.
    pub fn orchestration<O: Orchestration>(mut self, orchestration: O) -> Self {
        orchestration.register_activities(&mut self.activities);
        self.orchestrations
            .insert(O::NAME, Arc::new(ErasedOrch(orchestration)));
        self
    }

    /// Registers an activity.
    pub fn activity<A: crate::Activity>(mut self, activity: A) -> Self {
        self.activities.add(activity);
        self
    }

    /// Calls `observer` after each checkpoint is durable.
    pub fn on_step(mut self, observer: impl Fn(&StepEvent) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Sets the durability of checkpoints (default [`Durability::Flush`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Uses `store` instead of a sled database at the builder's path.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The largest input a client may start an instance with, in bytes (default 16 MiB).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Opens the store and resumes every unfinished instance whose orchestration is registered.
    pub async fn open(self) -> Result<Runtime, OpenError> {
        let store: Arc<dyn Store> = match self.store {
            Some(s) => s,
            None => Arc::new(SledStore::open(&self.path)?),
        };
        let commit =
            GroupCommit::start(store.clone()).map_err(|e| OpenError::Thread(e.to_string()))?;
        let (changes, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            store,
            commit,
            orchestrations: RwLock::new(self.orchestrations),
            activities: RwLock::new(self.activities),
            observer: self.observer,
            durability: self.durability,
            max_payload: self.max_payload,
            active: Mutex::new(HashMap::new()),
            unregistered: Mutex::new(HashMap::new()),
            unreadable: Mutex::new(HashMap::new()),
            changes,
        });
        inner.resume_all()?;
        Ok(Runtime { inner })
    }
}

/// A running durable runtime over one store. Cheap to clone; every clone is a client.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let rt = durable_runtime::Runtime::open("orders.db").await?;
/// if let Some(status) = rt.status("order-1")? {
///     println!("{:?}", status.state);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    commit: GroupCommit,
    orchestrations: RwLock<HashMap<&'static str, Arc<dyn ErasedOrchestration>>>,
    activities: RwLock<ActivityRegistry>,
    observer: Option<Observer>,
    durability: Durability,
    max_payload: usize,
    /// Instances with a driver task in this process.
    active: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Instances parked because their orchestration is not registered, by orchestration name.
    unregistered: Mutex<HashMap<String, Vec<String>>>,
    /// Instances whose record cannot be read, with the reason.
    unreadable: Mutex<HashMap<String, String>>,
    /// Bumped whenever an instance reaches a terminal or refused state.
    changes: watch::Sender<u64>,
}

fn now_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Runtime {
    /// Opens the sled database in directory `path` with nothing registered. Register
    /// orchestrations with [`register`](Self::register) or by starting them; their unfinished
    /// instances resume then.
    pub async fn open(path: impl AsRef<Path>) -> Result<Runtime, OpenError> {
        Self::builder(path).open().await
    }

    /// A builder for a runtime over the sled database in directory `path`.
    pub fn builder(path: impl AsRef<Path>) -> RuntimeBuilder {
        RuntimeBuilder {
            path: path.as_ref().to_owned(),
            store: None,
            orchestrations: HashMap::new(),
            activities: ActivityRegistry::default(),
            observer: None,
            durability: Durability::default(),
            max_payload: 16 << 20,
        }
    }

    /// Registers an orchestration (and the activities it calls) and resumes its unfinished
    /// instances.
    pub fn register<O: Orchestration>(&self, orchestration: O) {
        self.inner.register(orchestration);
    }

    /// Registers an activity.
    pub fn register_activity<A: crate::Activity>(&self, activity: A) {
        if let Ok(mut a) = self.inner.activities.write() {
            a.add(activity);
        }
    }

    /// Starts an instance of `orchestration` under `id`, durably, and returns a handle to it.
    ///
    /// Idempotent: if `id` exists as an instance of the same orchestration, returns a handle to
    /// that instance and starts nothing; if it exists as another orchestration, an error.
    pub async fn start<O: Orchestration>(
        &self,
        orchestration: O,
        id: impl Into<String>,
        input: O::Input,
    ) -> Result<Handle<O>, StartError> {
        let id = id.into();
        self.inner.register(orchestration);
        let bytes = codec::encode(&input).map_err(|e| StartError::Input {
            id: id.clone(),
            reason: e.to_string(),
        })?;
        if bytes.len() > self.inner.max_payload {
            return Err(StartError::Input {
                id,
                reason: format!(
                    "{} bytes exceed the limit of {} bytes",
                    bytes.len(),
                    self.inner.max_payload
                ),
            });
        }
        let now = now_ms();
        let rec = InstanceRecord {
            orchestration: O::NAME.to_owned(),
            state: State::Running,
            input: bytes,
            frame: None,
            pending: None,
            steps: 0,
            created_ms: now,
            updated_ms: now,
        };
        let rec_bytes = rec.to_bytes().map_err(|e| StartError::Input {
            id: id.clone(),
            reason: e.to_string(),
        })?;
        match self
            .inner
            .store
            .put_new(Space::Instances, id.as_bytes(), &rec_bytes)?
        {
            None => {
                self.inner.make_durable().await?;
                tracing::debug!(instance = %id, orchestration = O::NAME, "started");
                self.inner.clone().spawn(id.clone(), rec);
            }
            Some(existing) => {
                let existing =
                    InstanceRecord::from_bytes(&existing).map_err(|e| StartError::Unreadable {
                        id: id.clone(),
                        reason: e.to_string(),
                    })?;
                if existing.orchestration != O::NAME {
                    return Err(StartError::Conflict {
                        id,
                        existing: existing.orchestration,
                        requested: O::NAME.to_owned(),
                    });
                }
            }
        }
        Ok(Handle {
            rt: self.clone(),
            id,
            _o: PhantomData,
        })
    }

    /// A handle to an existing instance of `O` (not checked until used).
    pub fn handle<O: Orchestration>(&self, id: impl Into<String>) -> Handle<O> {
        Handle {
            rt: self.clone(),
            id: id.into(),
            _o: PhantomData,
        }
    }

    /// The status of instance `id`, or `None` if there is none.
    pub fn status(&self, id: &str) -> Result<Option<InstanceStatus>, StoreError> {
        self.inner.status(id)
    }

    /// Stops every instance task of this process (their state stays stored) and waits for them.
    /// The database closes when the last clone of the runtime is dropped.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = lock(&self.inner.active).drain().map(|(_, t)| t).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let _ = self.inner.store.flush();
    }
}

/// A handle to one instance of orchestration `O`.
pub struct Handle<O: Orchestration> {
    rt: Runtime,
    id: String,
    _o: PhantomData<fn() -> O>,
}

impl<O: Orchestration> fmt::Debug for Handle<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("id", &self.id)
            .field("orchestration", &O::NAME)
            .finish()
    }
}

type OutputOf<O> = <<O as Orchestration>::Output as OrchestrationOutput>::Ok;
type ErrorOf<O> = <<O as Orchestration>::Output as OrchestrationOutput>::Err;

impl<O: Orchestration> Handle<O> {
    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The instance's status.
    pub fn status(&self) -> Result<Option<InstanceStatus>, StoreError> {
        self.rt.status(&self.id)
    }

    /// Waits until the instance completes or fails and returns its result.
    pub async fn wait(&self) -> Result<OutputOf<O>, InstanceError<ErrorOf<O>>> {
        let mut changes = self.rt.inner.changes.subscribe();
        loop {
            let rec = match self
                .rt
                .inner
                .store
                .get(Space::Instances, self.id.as_bytes())?
            {
                Some(b) => b,
                None => return Err(InstanceError::NotFound(self.id.clone())),
            };
            let rec = InstanceRecord::from_bytes(&rec).map_err(|e| {
                InstanceError::Faulted(format!("instance `{}`: unreadable record: {e}", self.id))
            })?;
            match rec.state {
                State::Completed { output } => {
                    return codec::decode(&output)
                        .map_err(|e| InstanceError::Output(self.id.clone(), e.to_string()));
                }
                State::Failed {
                    message,
                    payload: Some(p),
                } => {
                    let error = codec::decode(&p)
                        .map_err(|e| InstanceError::Output(self.id.clone(), e.to_string()))?;
                    return Err(InstanceError::Failed { error, message });
                }
                State::Failed {
                    message,
                    payload: None,
                } => {
                    return Err(InstanceError::Faulted(message));
                }
                State::Incompatible { message } => {
                    return Err(InstanceError::Incompatible(message));
                }
                State::Running => {}
            }
            if changes.changed().await.is_err() {
                return Err(InstanceError::Shutdown);
            }
        }
    }

    /// Like [`wait`](Self::wait), giving up after `timeout` with `None`.
    pub async fn wait_timeout(
        &self,
        timeout: Duration,
    ) -> Option<Result<OutputOf<O>, InstanceError<ErrorOf<O>>>> {
        tokio::time::timeout(timeout, self.wait()).await.ok()
    }
}

impl Inner {
    fn register<O: Orchestration>(self: &Arc<Self>, orchestration: O) {
        if let Ok(mut a) = self.activities.write() {
            orchestration.register_activities(&mut a);
        }
        if let Ok(mut o) = self.orchestrations.write() {
            o.insert(O::NAME, Arc::new(ErasedOrch(orchestration)));
        }
        let parked = lock(&self.unregistered).remove(O::NAME).unwrap_or_default();
        for id in parked {
            match self.load(&id) {
                Ok(Some(rec)) => self.clone().spawn(id, rec),
                Ok(None) => {}
                Err(e) => tracing::error!(instance = %id, "cannot resume: {e}"),
            }
        }
    }

    fn orchestration(&self, name: &str) -> Option<Arc<dyn ErasedOrchestration>> {
        self.orchestrations.read().ok()?.get(name).cloned()
    }

    fn load(&self, id: &str) -> Result<Option<InstanceRecord>, String> {
        let bytes = self
            .store
            .get(Space::Instances, id.as_bytes())
            .map_err(|e| e.to_string())?;
        bytes
            .map(|b| InstanceRecord::from_bytes(&b).map_err(|e| e.to_string()))
            .transpose()
    }

    /// Scans the store and resumes every unfinished instance.
    fn resume_all(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.scan(Space::Instances, after.as_deref(), 1024)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, bytes) in page {
                let id = String::from_utf8_lossy(&key).into_owned();
                match InstanceRecord::from_bytes(&bytes) {
                    Ok(rec) if rec.is_terminal() => {}
                    Ok(rec) => self.clone().spawn(id, rec),
                    Err(e) => {
                        tracing::error!(instance = %id, "unreadable record: {e}");
                        lock(&self.unreadable).insert(id, e.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    fn status(&self, id: &str) -> Result<Option<InstanceStatus>, StoreError> {
        let Some(bytes) = self.store.get(Space::Instances, id.as_bytes())? else {
            return Ok(None);
        };
        let rec = match InstanceRecord::from_bytes(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Some(InstanceStatus {
                    id: id.to_owned(),
                    orchestration: String::new(),
                    state: InstanceState::Failed {
                        message: format!("instance `{id}`: unreadable record: {e}"),
                    },
                    steps: 0,
                    point: None,
                    pending: None,
                    created: UNIX_EPOCH,
                    updated: UNIX_EPOCH,
                    output: None,
                }));
            }
        };
        let registered = self.orchestration(&rec.orchestration).is_some();
        let (state, output) = match rec.state {
            State::Running if !registered => (InstanceState::Unregistered, None),
            State::Running => (InstanceState::Running, None),
            State::Completed { output } => (InstanceState::Completed, Some(output)),
            State::Failed { message, .. } => (InstanceState::Failed { message }, None),
            State::Incompatible { message } => (InstanceState::Incompatible { message }, None),
        };
        Ok(Some(InstanceStatus {
            id: id.to_owned(),
            orchestration: rec.orchestration,
            state,
            steps: rec.steps,
            point: rec.frame.as_ref().map(|f| (f.point.clone(), f.line)),
            pending: rec.pending.as_ref().map(|p| p.command.describe()),
            created: time_of(rec.created_ms),
            updated: time_of(rec.updated_ms),
            output,
        }))
    }

    async fn make_durable(&self) -> Result<(), StoreError> {
        match self.durability {
            Durability::Flush => self.commit.commit().await,
            Durability::Buffered => Ok(()),
        }
    }

    /// Writes `rec` and waits until it is durable.
    async fn checkpoint(&self, id: &str, rec: &InstanceRecord) -> Result<(), StoreError> {
        let bytes = rec.to_bytes().map_err(|e| StoreError::Io(e.to_string()))?;
        self.store.put(Space::Instances, id.as_bytes(), &bytes)?;
        self.make_durable().await
    }

    fn spawn(self: Arc<Self>, id: String, rec: InstanceRecord) {
        let mut active = lock(&self.active);
        if active.get(&id).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let span = tracing::info_span!("instance", id = %id, orchestration = %rec.orchestration);
        let task = tokio::spawn(self.clone().drive(id.clone(), rec).instrument(span));
        active.insert(id, task);
    }

    /// Runs one instance until it finishes, is refused, or waits for registration.
    async fn drive(self: Arc<Self>, id: String, mut rec: InstanceRecord) {
        while !rec.is_terminal() {
            let Some(orchestration) = self.orchestration(&rec.orchestration) else {
                tracing::warn!(
                    "orchestration `{}` is not registered; parked",
                    rec.orchestration
                );
                lock(&self.unregistered)
                    .entry(rec.orchestration.clone())
                    .or_default()
                    .push(id);
                return;
            };
            if matches!(rec.state, State::Incompatible { .. }) {
                rec.state = State::Running;
            }
            let completion = match rec.pending.clone() {
                None => None,
                Some(pending) => Some(self.carry_out(&id, &mut rec, pending).await),
            };
            let next = loop {
                let next = self.step(&id, &rec, orchestration.as_ref(), completion.clone());
                match self.checkpoint(&id, &next).await {
                    Ok(()) => break next,
                    Err(e) => {
                        tracing::error!("checkpoint failed, retrying the step: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            let completed = rec.pending.as_ref().map(|p| p.command.describe());
            rec = next;
            let outcome = match &rec.state {
                State::Running => match &rec.pending {
                    Some(p) => StepOutcome::Suspended(p.command.describe()),
                    None => StepOutcome::Failed("no command".into()),
                },
                State::Completed { .. } => StepOutcome::Completed,
                State::Failed { message, .. } => StepOutcome::Failed(message.clone()),
                State::Incompatible { message } => StepOutcome::Incompatible(message.clone()),
            };
            let refused = matches!(outcome, StepOutcome::Incompatible(_));
            if let Some(observer) = &self.observer {
                observer(&StepEvent {
                    instance: id.clone(),
                    step: rec.steps,
                    completed,
                    outcome,
                });
            }
            if rec.is_terminal() || refused {
                self.changes.send_modify(|v| *v += 1);
            }
            if refused {
                break;
            }
        }
        lock(&self.active).remove(&id);
    }

    /// Runs the orchestration from its frame to the next point; returns the new record.
    fn step(
        &self,
        id: &str,
        rec: &InstanceRecord,
        orchestration: &dyn ErasedOrchestration,
        completion: Option<Completion>,
    ) -> InstanceRecord {
        let mut next = rec.clone();
        next.updated_ms = now_ms();
        let ctx = Ctx::new(id, next.updated_ms);
        let span = tracing::debug_span!("step", n = rec.steps + 1);
        let _enter = span.enter();
        let resume = match (&rec.frame, completion) {
            (None, None) => Resume::Start(&rec.input),
            (Some(frame), Some(completion)) => Resume::At { frame, completion },
            _ => {
                next.state = State::Failed {
                    message: format!("instance `{id}`: record has a frame without a command"),
                    payload: None,
                };
                return next;
            }
        };
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| orchestration.step(&ctx, resume)));
        match result {
            Ok(StepResult::Suspend { frame, command }) => {
                next.steps += 1;
                next.pending = Some(Pending {
                    key: format!("{id}:{}", next.steps),
                    command,
                    failed_attempts: 0,
                    not_before_ms: 0,
                });
                next.frame = Some(frame);
            }
            Ok(StepResult::Complete(output)) => {
                next.steps += 1;
                next.state = State::Completed { output };
                next.frame = None;
                next.pending = None;
            }
            Ok(StepResult::Fail { message, payload }) => {
                next.steps += 1;
                next.state = State::Failed {
                    message,
                    payload: Some(payload),
                };
                next.frame = None;
                next.pending = None;
            }
            Ok(StepResult::Fault(Fault::Incompatible(m))) => {
                let message = format!(
                    "instance `{id}` of orchestration `{}`: {m}",
                    rec.orchestration
                );
                tracing::warn!("{message}");
                next.state = State::Incompatible { message };
            }
            Ok(StepResult::Fault(f)) => {
                let message = format!(
                    "instance `{id}` of orchestration `{}`: {f}",
                    rec.orchestration
                );
                tracing::error!("{message}");
                next.state = State::Failed {
                    message,
                    payload: None,
                };
            }
            Err(panic) => {
                let message = format!(
                    "instance `{id}`: orchestration `{}` panicked: {}",
                    rec.orchestration,
                    panic_message(panic.as_ref())
                );
                tracing::error!("{message}");
                next.state = State::Failed {
                    message,
                    payload: None,
                };
            }
        }
        next
    }

    /// Carries out the pending command and returns its completion. Failed attempts that will be
    /// retried are recorded, so a restart neither resets the count nor skips the backoff.
    async fn carry_out(
        &self,
        id: &str,
        rec: &mut InstanceRecord,
        mut pending: Pending,
    ) -> Completion {
        let Command::Activity {
            name,
            input,
            policy,
        } = pending.command.clone();
        loop {
            let wait = pending.not_before_ms.saturating_sub(now_ms());
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            let attempt = pending.failed_attempts + 1;
            let result = self
                .attempt(id, &name, &input, &policy, &pending.key, attempt)
                .await;
            match result {
                Err(failure) if attempt < policy.max_attempts && retryable(&failure) => {
                    pending.failed_attempts = attempt;
                    pending.not_before_ms = now_ms().saturating_add(
                        u64::try_from(policy.backoff(attempt).as_millis()).unwrap_or(u64::MAX),
                    );
                    tracing::info!(activity = %name, attempt, "attempt failed, will retry: {failure:?}");
                    rec.pending = Some(pending.clone());
                    rec.updated_ms = now_ms();
                    while let Err(e) = self.checkpoint(id, rec).await {
                        tracing::error!("cannot record the failed attempt, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                result => return Completion::Activity(result),
            }
        }
    }

    async fn attempt(
        &self,
        id: &str,
        name: &str,
        input: &[u8],
        policy: &RetryPolicy,
        key: &str,
        attempt: u32,
    ) -> Result<Vec<u8>, ActivityFailure> {
        let activity = self.activities.read().ok().and_then(|a| {
            a.by_name
                .get_key_value(name)
                .map(|(n, act)| (*n, act.clone()))
        });
        let Some((static_name, activity)) = activity else {
            return Err(ActivityFailure::NotRegistered(name.to_owned()));
        };
        let ctx = ActivityContext {
            instance_id: id.to_owned(),
            idempotency_key: key.to_owned(),
            attempt,
            name: static_name,
        };
        let span = tracing::info_span!("activity", name = %name, attempt);
        let task = tokio::spawn(activity.invoke(ctx, input).instrument(span));
        // Stopping the instance (shutdown, cancellation) stops its activity too.
        let _abort = AbortOnDrop(task.abort_handle());
        let joined = match policy.attempt_timeout {
            None => task.await,
            Some(limit) => match tokio::time::timeout(limit, task).await {
                Ok(j) => j,
                Err(_) => return Err(ActivityFailure::TimedOut(limit)),
            },
        };
        match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(ActivityFailure::Panicked(panic_message(
                e.into_panic().as_ref(),
            ))),
            Err(e) => Err(ActivityFailure::Panicked(format!(
                "activity task ended: {e}"
            ))),
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn retryable(failure: &ActivityFailure) -> bool {
    !matches!(failure, ActivityFailure::NotRegistered(_))
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
