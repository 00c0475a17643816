//! The errors of the client's operations, below the client so that every module can name them.

use crate::status::InstanceState;
use crate::store::StoreError;

/// Opening a runtime failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The store could not be opened (held by another process, unreadable…).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A thread of the runtime (the group commit's, the lease keeper's) could not be started.
    #[error("cannot start a thread of the runtime: {0}")]
    Thread(String),
}

/// Starting an instance failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The id is empty, contains a NUL character or is longer than [`MAX_ID_BYTES`](crate::MAX_ID_BYTES).
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
    /// The runtime was shut down ([`Runtime::shutdown`](crate::Runtime::shutdown)); nothing was stored.
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
    /// The instance has sub-orchestrations still running: purging it alone would leave them
    /// without their parent. Purge it with [`Scope::Tree`](crate::Scope::Tree), or wait for
    /// them (or cancel them) first.
    #[error(
        "instance `{id}` has sub-orchestrations still running ({}); purge it with `Scope::Tree` \
         to cancel and purge them too, or wait for them first",
        children.join(", ")
    )]
    ChildrenRunning {
        /// The instance id.
        id: String,
        /// The ids of its running sub-orchestrations.
        children: Vec<String>,
    },
    /// The instance is a sub-orchestration whose parent is still waiting to take its result:
    /// purged now, the result would be lost to the parent. Purge it once the parent has taken
    /// it, or purge the parent with [`Scope::Tree`](crate::Scope::Tree) once the parent ends.
    #[error(
        "instance `{id}` is a sub-orchestration whose parent `{parent}` has not taken its result \
         yet; purge it after the parent has, or the parent with `Scope::Tree` once it ends"
    )]
    ParentWaiting {
        /// The instance id.
        id: String,
        /// Its parent's id.
        parent: String,
    },
    /// The payload could not be encoded or is too large.
    #[error("payload for instance `{id}`: {reason}")]
    Payload {
        /// The instance id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The change would make the instance's record larger than the record limit
    /// ([`RuntimeBuilder::max_record`](crate::RuntimeBuilder::max_record)); nothing was written.
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
    /// The runtime was shut down ([`Runtime::shutdown`](crate::Runtime::shutdown)); nothing was done.
    #[error("the runtime has shut down; nothing was done to instance `{0}`")]
    Shutdown(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A [`signal_with_start`](crate::Runtime::signal_with_start) failed; nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalWithStartError {
    /// The instance did not exist and could not be started, or its id is held by another
    /// orchestration or a parent.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The event could not be raised: the payload is refused, or the instance has finished.
    #[error(transparent)]
    Event(#[from] ClientError),
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
    /// The runtime was shut down ([`Runtime::shutdown`](crate::Runtime::shutdown)) before the instance finished. It
    /// stays stored and resumes when a runtime opens the database again.
    #[error("the runtime shut down before the instance finished")]
    Shutdown,
    /// The instance was cancelled.
    #[error("instance cancelled: {0}")]
    Cancelled(String),
}

/// The message of a caught panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `f`, turning a panic into its message: for the engine's own threads and tasks, which
/// must outlive a store that panics.
pub(crate) fn unless_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|panic| panic_message(panic.as_ref()))
}
