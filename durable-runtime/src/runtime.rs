//! The runtime: opens a store, runs instances on tokio, checkpoints every step.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::clock::Clock;
use crate::codec;
use crate::commit::GroupCommit;
use crate::orchestration::{Orchestration, OrchestrationOutput, Registry};
use crate::record::{InboxEvent, InstanceRecord, State};
use crate::store::{SledStore, Space, Store, StoreError};
use crate::worker::Inner;

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

/// The longest instance id a client may choose, in bytes. Ids a parent derives for its
/// sub-orchestrations (`<parent>:<step>`) may be longer.
pub const MAX_ID_BYTES: usize = 256;

/// The first character of every sub-orchestration id the runtime derives (`~P:1` for the child
/// that `P` starts at its first step, `~P:1:2` for that child's own child). Ids chosen by a client
/// or with `Child::with_id` cannot start with it, so no one can take a derived id first.
pub const DERIVED_ID_PREFIX: char = '~';

/// Checks an instance id chosen by a client or given with `Child::with_id`: not empty, not
/// starting with [`DERIVED_ID_PREFIX`], no NUL byte, at most [`MAX_ID_BYTES`].
pub(crate) fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("an instance id must not be empty".into());
    }
    if id.starts_with(DERIVED_ID_PREFIX) {
        return Err(format!(
            "ids starting with `{DERIVED_ID_PREFIX}` are reserved for the sub-orchestrations the \
             runtime names"
        ));
    }
    if id.contains('\0') {
        return Err("an instance id must not contain a NUL character".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "an instance id must be at most {MAX_ID_BYTES} bytes, this one has {}",
            id.len()
        ));
    }
    Ok(())
}

/// An id short enough to print in an error.
pub(crate) fn shown_id(id: &str) -> String {
    match id.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_owned(),
    }
}

/// Starting an instance failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The id is empty, contains a NUL character or is longer than [`MAX_ID_BYTES`].
    #[error("invalid instance id `{id}`: {reason}")]
    InvalidId {
        /// The id (its first 64 characters).
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The id is taken by an instance of the same orchestration that belongs to another parent
    /// (or to none): a client cannot take over a sub-orchestration's id, nor a parent a
    /// client's instance.
    #[error("instance `{id}` already exists and belongs to {owner}, not to {requested}")]
    Taken {
        /// The instance id.
        id: String,
        /// Who started the existing instance (`a client` or `parent `P``).
        owner: String,
        /// Who asked.
        requested: String,
    },
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
    /// A newer version of the orchestration is registered and takes another input type.
    #[error(
        "orchestration `{name}` version {newest} is registered and new instances start on it, but \
         it takes another input than version {requested}; start it through version {newest}"
    )]
    Version {
        /// The orchestration name.
        name: String,
        /// The newest registered version.
        newest: u32,
        /// The version the caller named.
        requested: u32,
    },
    /// The runtime was shut down ([`Runtime::shutdown`]); nothing was stored.
    #[error("the runtime has shut down; instance `{0}` was not started")]
    Shutdown(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A client operation on an instance (raise, cancel, suspend, resume, purge) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No instance has this id.
    #[error("no instance `{0}`")]
    NotFound(String),
    /// The instance has finished; the operation has no effect on it.
    #[error("instance `{id}` has already finished ({state:?}); nothing was done")]
    Finished {
        /// The instance id.
        id: String,
        /// How it finished.
        state: InstanceState,
    },
    /// A client has already asked to cancel the instance (with `reason`); the first request
    /// wins and this one was not recorded.
    #[error("instance `{id}` is already being cancelled ({reason}); this request was not recorded")]
    Cancelling {
        /// The instance id.
        id: String,
        /// The reason of the first request, the one that will be applied.
        reason: String,
    },
    /// The instance is still running (purge needs a finished instance).
    #[error("instance `{0}` is still running; cancel it or wait for it first")]
    Running(String),
    /// The payload could not be encoded or is too large.
    #[error("payload for instance `{id}`: {reason}")]
    Payload {
        /// The instance id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The change would make the instance's record larger than the record limit
    /// ([`RuntimeBuilder::max_record`]); nothing was written.
    #[error("instance `{id}`: {reason}")]
    TooLarge {
        /// The instance id.
        id: String,
        /// The sizes involved.
        reason: String,
    },
    /// The instance's record cannot be read.
    #[error("instance `{id}`: unreadable record: {reason}")]
    Unreadable {
        /// The instance id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The runtime was shut down ([`Runtime::shutdown`]); nothing was done.
    #[error("the runtime has shut down; nothing was done to instance `{0}`")]
    Shutdown(String),
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
    /// The runtime was shut down ([`Runtime::shutdown`]) before the instance finished. It
    /// stays stored and resumes when a runtime opens the database again.
    #[error("the runtime shut down before the instance finished")]
    Shutdown,
    /// The instance was cancelled.
    #[error("instance cancelled: {0}")]
    Cancelled(String),
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
    /// Cancelled by a client (or with its parent).
    Cancelled {
        /// The reason given.
        reason: String,
    },
    /// Suspended by a client; resumes when a client resumes it.
    Suspended,
    /// This build refused to resume it; it stays stored and resumes under a compatible build.
    Incompatible {
        /// What differs.
        message: String,
    },
    /// Its orchestration is not registered in this process; it resumes once it is.
    Unregistered,
}

impl InstanceState {
    /// Completed, failed or cancelled: nothing more will happen (as for the stored record,
    /// [`Runtime::raise_event`] and [`Runtime::purge`]).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            InstanceState::Completed
                | InstanceState::Failed { .. }
                | InstanceState::Cancelled { .. }
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
    /// The orchestration version the instance runs on.
    pub version: u32,
    /// Where it stands.
    pub state: InstanceState,
    /// Checkpoints written since the start.
    pub steps: u64,
    /// The current suspension point: identity and source line.
    pub point: Option<(String, u32)>,
    /// The command the current point issued, described.
    pub pending: Option<String>,
    /// The locals stored in the current frame: name and type, in stored order.
    pub stored_locals: Vec<(String, String)>,
    /// The size of the current frame's encoded locals, in bytes.
    pub frame_bytes: usize,
    /// Creation time.
    pub created: SystemTime,
    /// Time of the last checkpoint.
    pub updated: SystemTime,
    /// The parent instance, for a sub-orchestration.
    pub parent: Option<String>,
    /// Events raised and not yet taken.
    pub buffered_events: usize,
    pub(crate) output: Option<Vec<u8>>,
    pub(crate) custom_status: Option<Vec<u8>>,
}

impl InstanceStatus {
    /// The output of a completed instance, decoded as `T`.
    pub fn output<T: crate::Persistable>(&self) -> Option<Result<T, codec::CodecError>> {
        self.output.as_deref().map(codec::decode)
    }

    /// The custom status the orchestration last set, decoded as `T`.
    pub fn custom_status<T: crate::Persistable>(&self) -> Option<Result<T, codec::CodecError>> {
        self.custom_status.as_deref().map(codec::decode)
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
    /// The instance was cancelled.
    Cancelled(String),
    /// The instance started over with a new input.
    ContinuedAsNew,
    /// Not a new step: the result of branch `n` of the pending join or race was stored on its
    /// own (`step` is the step that issued it), so a crash will not run that branch again.
    BranchRecorded(usize),
}

pub(crate) type Observer = Arc<dyn Fn(&StepEvent) + Send + Sync>;

/// Configures and opens a [`Runtime`].
pub struct RuntimeBuilder {
    path: PathBuf,
    store: Option<Arc<dyn Store>>,
    registry: Registry,
    observer: Option<Observer>,
    durability: Durability,
    max_payload: usize,
    max_record: usize,
    clock: Clock,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("path", &self.path)
            .field("registry", &self.registry)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Registers an orchestration and the activities it calls.
    pub fn orchestration<O: Orchestration>(mut self, orchestration: impl FnOnce() -> O) -> Self {
        self.registry.add_orchestration(orchestration);
        self
    }

    /// Registers an activity.
    pub fn activity<A: crate::Activity>(mut self, activity: impl FnOnce() -> A) -> Self {
        self.registry.add_activity(activity);
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

    /// The largest input or event payload a client may pass, in bytes (default 16 MiB; never
    /// more than the record limit).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The largest stored instance record, in bytes: input, current frame, pending command,
    /// buffered events, custom status and output together (default and maximum 64 MiB,
    /// [`codec::DECODE_LIMIT`], what the decoder accepts). Every write is checked against it, so
    /// nothing is acknowledged that could not be read back: a start or an event that would
    /// exceed it is refused, a step whose checkpoint would exceed it fails its instance with a
    /// message naming what is large, and an activity result that does not fit fails that
    /// attempt.
    pub fn max_record(mut self, bytes: usize) -> Self {
        self.max_record = bytes;
        self
    }

    /// The clock timers, `ctx.now()`, retry backoffs and activity attempt timeouts read
    /// (default: the system clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
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
            orchestrations: RwLock::new(self.registry.orchestrations),
            activities: RwLock::new(self.registry.activities),
            observer: self.observer,
            durability: self.durability,
            max_record: self.max_record.min(codec::DECODE_LIMIT),
            max_payload: self.max_payload.min(self.max_record).min(codec::DECODE_LIMIT),
            clock: self.clock,
            active: Mutex::new(HashMap::new()),
            shut_down: std::sync::atomic::AtomicBool::new(false),
            unregistered: Mutex::new(HashMap::new()),
            locks: (0..64).map(|_| Mutex::new(())).collect(),
            timer_wake: tokio::sync::Notify::new(),
            timer_task: Mutex::new(None),
            changes,
            resident: Mutex::new(HashMap::new()),
            awaiting_activity: Mutex::new(HashMap::new()),
        });
        inner.start_timers();
        inner.resume_all()?;
        Ok(Runtime { inner })
    }
}

/// Which instances [`Runtime::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only these states (compared by kind: `Failed { .. }` matches every failure).
    pub states: Option<Vec<InstanceState>>,
    /// Only instances of this orchestration.
    pub orchestration: Option<String>,
    /// Start after this instance id (the `next` of the previous page).
    pub after: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
}

/// One page of [`Runtime::list`].
#[derive(Debug, Clone)]
pub struct Page {
    /// The instances, in id order.
    pub instances: Vec<InstanceStatus>,
    /// Pass as [`ListFilter::after`] for the next page; `None` at the end.
    pub next: Option<String>,
}

/// A running durable runtime over one store, and the client of its instances. Cheap to clone;
/// every clone talks to the same runtime.
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
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
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
            registry: Registry::default(),
            observer: None,
            durability: Durability::default(),
            max_payload: 16 << 20,
            max_record: codec::DECODE_LIMIT,
            clock: Clock::system(),
        }
    }

    /// The runtime's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Registers an orchestration (and the activities it calls) and resumes its unfinished
    /// instances.
    pub fn register<O: Orchestration>(&self, orchestration: impl FnOnce() -> O) {
        self.inner.register(orchestration());
    }

    /// Registers an activity.
    pub fn register_activity<A: crate::Activity>(&self, activity: impl FnOnce() -> A) {
        let mut registry = Registry::default();
        registry.add_activity(activity);
        self.inner.adopt(registry, true);
    }

    /// Starts an instance of `orchestration` under `id`, durably, and returns a handle to it.
    ///
    /// Idempotent: if `id` exists as an instance of the same orchestration started by a client,
    /// returns a handle to that instance and starts nothing, whatever input it was started with;
    /// if it exists as another orchestration, or as a sub-orchestration of some parent, an
    /// error. `id` must not be empty, contain NUL or exceed [`MAX_ID_BYTES`].
    pub async fn start<O: Orchestration>(
        &self,
        orchestration: impl FnOnce() -> O,
        id: impl Into<String>,
        input: O::Input,
    ) -> Result<Handle<O>, StartError> {
        let id = id.into();
        validate_id(&id).map_err(|reason| StartError::InvalidId { id: shown_id(&id), reason })?;
        if self.inner.is_shut_down() {
            return Err(StartError::Shutdown(shown_id(&id)));
        }
        self.inner.register(orchestration());
        let bytes = codec::encode(&input)
            .and_then(|b| codec::check_readable::<O::Input>(&b).map(|()| b))
            .map_err(|e| StartError::Input { id: id.clone(), reason: e.to_string() })?;
        // New instances start on the newest registered version of the name, which must take
        // the same input as the version the caller named.
        let (version, input_type) =
            self.inner.newest(O::NAME).unwrap_or((O::VERSION, std::any::type_name::<O::Input>()));
        if version != O::VERSION && input_type != std::any::type_name::<O::Input>() {
            return Err(StartError::Version {
                name: O::NAME.to_owned(),
                newest: version,
                requested: O::VERSION,
            });
        }
        self.inner.start_encoded(O::NAME, Some(version), &id, bytes, None).await?;
        Ok(Handle { rt: self.clone(), id, _o: PhantomData })
    }

    /// A handle to an existing instance of `O` (not checked until used).
    pub fn handle<O: Orchestration>(&self, id: impl Into<String>) -> Handle<O> {
        Handle { rt: self.clone(), id: id.into(), _o: PhantomData }
    }

    /// The status of instance `id`, or `None` if there is none.
    ///
    /// It shows the latest write, which can be up to one group commit ahead of what is on disk;
    /// [`Handle::wait`] hands out only results that are durable.
    pub fn status(&self, id: &str) -> Result<Option<InstanceStatus>, StoreError> {
        let Some(bytes) = self.inner.store.get(Space::Instances, id.as_bytes())? else {
            return Ok(None);
        };
        Ok(Some(self.inner.status_of(id, &bytes)))
    }

    /// Raises event `name` with `payload` for instance `id`. Buffered (first in, first out per
    /// name) until the orchestration waits for it; durable when this returns.
    pub async fn raise_event<T: crate::Persistable>(
        &self,
        id: &str,
        name: &str,
        payload: &T,
    ) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        let bytes = codec::encode(payload)
            .and_then(|b| codec::check_readable::<T>(&b).map(|()| b))
            .map_err(|e| ClientError::Payload { id: id.into(), reason: e.to_string() })?;
        if bytes.len() > self.inner.max_payload {
            return Err(ClientError::Payload {
                id: id.into(),
                reason: format!(
                    "{} bytes exceed the limit of {} bytes",
                    bytes.len(),
                    self.inner.max_payload
                ),
            });
        }
        self.inner
            .update_live(id, |rec| {
                let seq = rec.next_event_seq;
                rec.next_event_seq += 1;
                rec.inbox.push(InboxEvent { seq, name: name.to_owned(), payload: bytes });
            })
            .await
            .map_err(|e| match e {
                ClientError::TooLarge { id, reason } => ClientError::Payload {
                    id,
                    reason: format!("refused, nothing was stored: {reason}"),
                },
                e => e,
            })?;
        self.inner.wake(id);
        Ok(())
    }

    /// Cancels instance `id` with `reason`: at its next suspension point (at once if it waits or
    /// is suspended) it ends with the terminal state `Cancelled`; its sub-orchestrations are
    /// cancelled too.
    ///
    /// The first request wins, as a termination does in the Durable Task Framework: once a
    /// cancellation is recorded, a later `cancel` with another reason changes nothing and
    /// returns [`ClientError::Cancelling`] naming the first reason (so no caller is told `Ok`
    /// for a reason that will not be applied). The same reason again returns `Ok`, so a retried
    /// call is harmless. Once the cancellation is applied, `cancel` returns
    /// [`ClientError::Finished`].
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        self.inner
            .try_update_live(id, |rec| match &rec.cancel {
                Some(first) if first != reason => {
                    Err(ClientError::Cancelling { id: id.into(), reason: first.clone() })
                }
                _ => {
                    rec.cancel = Some(reason.to_owned());
                    Ok(())
                }
            })
            .await?;
        self.inner.wake(id);
        Ok(())
    }

    /// Suspends instance `id`: it stops at its current suspension point (running activities
    /// are stopped and will run again) until [`resume`](Self::resume). A suspended instance
    /// still applies a [`cancel`](Self::cancel) at once.
    pub async fn suspend(&self, id: &str) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        self.inner.update_live(id, |rec| rec.suspended = true).await?;
        self.inner.wake(id);
        Ok(())
    }

    /// Resumes a suspended instance.
    pub async fn resume(&self, id: &str) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        self.inner.update_live(id, |rec| rec.suspended = false).await?;
        self.inner.wake(id);
        Ok(())
    }

    /// Instances matching `filter`, one page at a time, in id order.
    pub fn list(&self, filter: &ListFilter) -> Result<Page, StoreError> {
        let limit = filter.limit.unwrap_or(100).max(1);
        let mut out = Vec::new();
        let mut after = filter.after.clone().map(String::into_bytes);
        loop {
            let batch = self.inner.store.scan(Space::Instances, after.as_deref(), 512)?;
            let Some((last, _)) = batch.last() else {
                return Ok(Page { instances: out, next: None });
            };
            after = Some(last.clone());
            for (key, bytes) in batch {
                let id = String::from_utf8_lossy(&key).into_owned();
                let status = self.inner.status_of(&id, &bytes);
                let state_ok = filter.states.as_ref().is_none_or(|states| {
                    states
                        .iter()
                        .any(|s| std::mem::discriminant(s) == std::mem::discriminant(&status.state))
                });
                let name_ok =
                    filter.orchestration.as_ref().is_none_or(|n| *n == status.orchestration);
                if state_ok && name_ok {
                    out.push(status);
                    if out.len() == limit {
                        return Ok(Page { instances: out, next: Some(id) });
                    }
                }
            }
        }
    }

    /// Deletes a finished instance and everything stored for it. A running instance is an
    /// error.
    pub async fn purge(&self, id: &str) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        self.inner.purge(id).await
    }

    /// Stops every instance task of this process (their state stays stored) and waits for them.
    /// The database closes when the last clone of the runtime (and of its handles) is dropped.
    ///
    /// Afterwards, on every clone: [`Handle::wait`] on an unfinished instance returns
    /// [`InstanceError::Shutdown`] (pending waits end too); [`start`](Self::start) is refused
    /// with [`StartError::Shutdown`] and `raise_event`, `cancel`, `suspend`, `resume` and
    /// `purge` with [`ClientError::Shutdown`]; no instance runs. `status` and `list` still read
    /// the store.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    fn refuse_after_shutdown(&self, id: &str) -> Result<(), ClientError> {
        if self.inner.is_shut_down() {
            return Err(ClientError::Shutdown(shown_id(id)));
        }
        Ok(())
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
        f.debug_struct("Handle").field("id", &self.id).field("orchestration", &O::NAME).finish()
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

    /// Waits until the instance completes, fails or is cancelled, and returns its result, once
    /// that result is durable. After [`Runtime::shutdown`] (or when it happens while waiting),
    /// returns the result if the instance has already finished, else
    /// [`InstanceError::Shutdown`].
    pub async fn wait(&self) -> Result<OutputOf<O>, InstanceError<ErrorOf<O>>> {
        let mut changes = self.rt.inner.changes.subscribe();
        loop {
            let since = self.rt.inner.epoch();
            let rec = match self.rt.inner.store.get(Space::Instances, self.id.as_bytes())? {
                Some(b) => b,
                None => return Err(InstanceError::NotFound(self.id.clone())),
            };
            let rec = InstanceRecord::from_bytes(&rec).map_err(|e| {
                InstanceError::Faulted(format!("instance `{}`: unreadable record: {e}", self.id))
            })?;
            if rec.is_terminal() {
                // The record may have been written but not yet flushed by its driver: a result
                // handed out must survive a crash, so wait until everything written is durable.
                if let Err(e) = self.rt.inner.make_durable(since).await {
                    match e {
                        // The store stopped: nothing more will become durable.
                        StoreError::Failed(_) => return Err(e.into()),
                        // What was read may be gone: read again.
                        _ => {
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
            }
            match rec.state {
                State::Completed { output } => {
                    return codec::decode(&output)
                        .map_err(|e| InstanceError::Output(self.id.clone(), e.to_string()));
                }
                State::Failed { message, payload: Some(p) } => {
                    let error = codec::decode(&p)
                        .map_err(|e| InstanceError::Output(self.id.clone(), e.to_string()))?;
                    return Err(InstanceError::Failed { error, message });
                }
                State::Failed { message, payload: None } => {
                    return Err(InstanceError::Faulted(message));
                }
                State::Cancelled { reason } => return Err(InstanceError::Cancelled(reason)),
                // Refused by this build, unless a driver is retrying it right now.
                State::Incompatible { message } if !self.rt.inner.is_driven(&self.id) => {
                    return Err(InstanceError::Incompatible(message));
                }
                State::Incompatible { .. } => {}
                State::Running => {}
            }
            // Set before `shutdown` notifies: a wait that subscribed earlier is woken below.
            if self.rt.inner.is_shut_down() {
                return Err(InstanceError::Shutdown);
            }
            if changes.changed().await.is_err() {
                return Err(InstanceError::Shutdown);
            }
        }
    }

    /// Like [`wait`](Self::wait), giving up after `timeout` (real time) with `None`.
    pub async fn wait_timeout(
        &self,
        timeout: Duration,
    ) -> Option<Result<OutputOf<O>, InstanceError<ErrorOf<O>>>> {
        tokio::time::timeout(timeout, self.wait()).await.ok()
    }
}

pub(crate) fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
