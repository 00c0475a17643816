//! What a client reads about instances and steps: states, statuses, step reports, listing.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::codec;
use crate::op::Command;
use crate::record::{InstanceRecord, State};

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

/// Which instances a [`cancel_with`](crate::Runtime::cancel_with) or a
/// [`purge_with`](crate::Runtime::purge_with) applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// The instance and its sub-orchestrations, theirs too, at every depth (recursive). For a
    /// cancel: the sub-orchestrations it waits for; for a purge: every stored one.
    Tree,
    /// The instance alone.
    Instance,
}

/// A kind of suspension point an instance can be parked at, for
/// [`Handle::parked`](crate::Handle::parked).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Parked {
    /// A durable timer (`ctx.sleep`, `ctx.sleep_until`, or a scheduled start).
    Timer,
    /// A wait for the event of this name (with or without a timeout).
    Event(String),
    /// A sub-orchestration.
    Child,
    /// An activity or a sub-orchestration waiting out its retry backoff (or an event send
    /// waiting to try a failed store again).
    Backoff,
    /// Any suspension point.
    Any,
}

impl Parked {
    /// Whether `rec` waits for such an operation, one that is not ready to complete at `now_ms`:
    /// a timer not due, an event wait with no event of its name among `buffered` (nor a timeout
    /// due), a child that has not finished (`child_finished`), a backoff not over. A ready one
    /// is about to be taken by a driver, so the instance is not parked there.
    pub(crate) fn matches(
        &self,
        rec: &InstanceRecord,
        now_ms: u64,
        buffered: &[&str],
        child_finished: impl Fn(&str) -> bool,
    ) -> bool {
        let Some(pending) = &rec.pending else { return false };
        let waits = |leaf: &Command, branch: &crate::record::Branch| match leaf {
            Command::Timer { fire_at_ms } => *fire_at_ms > now_ms,
            Command::Event { name, timeout_at_ms } => {
                !buffered.contains(&name.as_str()) && timeout_at_ms.is_none_or(|t| t > now_ms)
            }
            Command::Child { .. } if !branch.child_started => branch.not_before_ms > now_ms,
            Command::Child { .. } => branch.child_id.as_deref().is_none_or(|c| !child_finished(c)),
            Command::Activity { .. } | Command::SendEvent { .. } => branch.not_before_ms > now_ms,
            _ => false,
        };
        let leaves = pending.command.leaves().iter().zip(&pending.branches);
        let undone: Vec<_> = leaves.filter(|(_, branch)| branch.done.is_none()).collect();
        // Parked only when nothing of the command is ready.
        if undone.is_empty() || !undone.iter().all(|(leaf, branch)| waits(leaf, branch)) {
            return false;
        }
        undone.iter().any(|(leaf, branch)| match (self, leaf) {
            (Parked::Any, _)
            | (Parked::Timer, Command::Timer { .. })
            | (Parked::Child, Command::Child { .. })
            | (Parked::Backoff, Command::Activity { .. } | Command::SendEvent { .. }) => true,
            (Parked::Backoff, Command::Child { .. }) => !branch.child_started,
            (Parked::Event(name), Command::Event { name: waited, .. }) => name == waited,
            _ => false,
        })
    }
}

/// The state of an instance, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceState {
    /// Started with a time to begin ([`Runtime::start_at`](crate::Runtime::start_at)) that has
    /// not come: it has not run a step yet.
    Scheduled {
        /// When it begins (runtime clock).
        at: SystemTime,
    },
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
    /// [`Runtime::raise_event`](crate::Runtime::raise_event) and [`Runtime::purge`](crate::Runtime::purge)).
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

/// Which instances [`Runtime::list`](crate::Runtime::list) returns.
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

/// One page of [`Runtime::list`](crate::Runtime::list).
#[derive(Debug, Clone)]
pub struct Page {
    /// The instances, in id order.
    pub instances: Vec<InstanceStatus>,
    /// Pass as [`ListFilter::after`] for the next page; `None` at the end.
    pub next: Option<String>,
}

pub(crate) fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// How a client sees the state of `rec`; `registered`: whether its orchestration is.
pub(crate) fn state_of(rec: &InstanceRecord, registered: bool) -> InstanceState {
    match &rec.state {
        State::Running if !registered => InstanceState::Unregistered,
        State::Running if rec.suspended => InstanceState::Suspended,
        State::Running => match rec.scheduled_start() {
            Some(at) => InstanceState::Scheduled { at: time_of(at) },
            None => InstanceState::Running,
        },
        State::Completed { .. } => InstanceState::Completed,
        State::Failed { message, .. } => InstanceState::Failed { message: message.clone() },
        State::Cancelled { reason } => InstanceState::Cancelled { reason: reason.clone() },
        State::Incompatible { message } => InstanceState::Incompatible { message: message.clone() },
    }
}

/// The status of instance `id` from its record (or why it cannot be read) and the number of
/// events waiting in its store inbox.
pub(crate) fn status_of(
    id: &str,
    rec: Result<InstanceRecord, String>,
    registered: impl FnOnce(&str, u32) -> bool,
    inbox: usize,
) -> InstanceStatus {
    match rec {
        Ok(rec) => {
            let registered = registered(&rec.orchestration, rec.version);
            let state = state_of(&rec, registered);
            let output = match &rec.state {
                State::Completed { output } => Some(output.clone()),
                _ => None,
            };
            InstanceStatus {
                id: id.to_owned(),
                orchestration: rec.orchestration.clone(),
                version: rec.version,
                state,
                steps: rec.steps,
                point: rec.frame.as_ref().map(|f| (f.point.clone(), f.line)),
                pending: rec.pending.as_ref().map(|p| p.command.describe()),
                stored_locals: rec.frame.as_ref().map(|f| f.layout.clone()).unwrap_or_default(),
                frame_bytes: rec.frame.as_ref().map_or(0, |f| {
                    let in_slots = f.slots.iter().fold(0u64, |n, s| n.saturating_add(s.len));
                    f.locals.len().saturating_add(usize::try_from(in_slots).unwrap_or(usize::MAX))
                }),
                created: time_of(rec.created_ms),
                updated: time_of(rec.updated_ms),
                parent: rec.parent.clone(),
                buffered_events: rec.inbox.len() + inbox,
                output,
                custom_status: rec.custom_status,
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
