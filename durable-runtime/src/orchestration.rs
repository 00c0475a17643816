//! Orchestrations: the step machines `#[orchestration]` generates, and the context they run with.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Persistable;
use crate::activity::{Activity, ActivityRegistry};
use crate::op::{Call, Command, Completion};
use crate::record::Frame;

/// The context an orchestration is given: it creates durable operations and gives recorded time.
///
/// Code between two `.await`s runs again if the process dies before its checkpoint; everything it
/// does through the context is pure, so that is invisible.
#[derive(Clone)]
pub struct Ctx {
    inner: Arc<CtxInner>,
}

struct CtxInner {
    instance_id: String,
    now_ms: u64,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("instance_id", &self.inner.instance_id)
            .finish()
    }
}

impl Ctx {
    pub(crate) fn new(instance_id: &str, now_ms: u64) -> Self {
        Self {
            inner: Arc::new(CtxInner {
                instance_id: instance_id.to_owned(),
                now_ms,
            }),
        }
    }

    /// The id of the running instance.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Calls activity `activity` with `input`; `.await` the result.
    ///
    /// The input is recorded in the checkpoint before the activity runs; the activity runs at
    /// least once and its result (or error) is recorded before the orchestration continues.
    pub fn call<A: Activity>(&self, activity: A, input: A::Input) -> Call<A> {
        let _ = activity;
        Call::new(input)
    }

    /// The time at which this step started, from the runtime's clock.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.inner.now_ms)
    }
}

/// What an orchestration returns: a `Result` whose both sides can be stored.
#[diagnostic::on_unimplemented(
    message = "an orchestration must return `Result<T, E>` with storable `T` and `E: Display`, not `{Self}`",
    label = "the return type must be `Result<T, E>`",
    note = "`T` and `E` must implement `Serialize` and `DeserializeOwned`; `durable::Failure` is a ready-made `E`"
)]
pub trait OrchestrationOutput {
    /// The success value.
    type Ok: Persistable + Send;
    /// The error value.
    type Err: Persistable + fmt::Display + Send;
    /// Splits into the two sides.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> OrchestrationOutput for Result<T, E>
where
    T: Persistable + Send,
    E: Persistable + fmt::Display + Send,
{
    type Ok = T;
    type Err = E;
    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// A suspension point of an orchestration, as the macro saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointInfo {
    /// Stable identity: the enclosing scopes and the operation, not the line.
    pub identity: &'static str,
    /// Source line of the `.await`.
    pub line: u32,
    /// The locals stored at this point, in stored order.
    pub locals: &'static [&'static str],
}

/// How a step starts: from the input, or from a saved frame with the completion of its command.
#[derive(Debug)]
#[non_exhaustive]
pub enum Resume<'a> {
    /// The first step: the encoded input.
    Start(&'a [u8]),
    /// A later step: the saved frame and what its command produced.
    At {
        /// The frame saved at the suspension point.
        frame: &'a Frame,
        /// The completion of the point's command.
        completion: Completion,
    },
}

/// Why a step could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// The saved frame does not match this build's layout of its point.
    #[error("incompatible checkpoint: {0}")]
    Incompatible(String),
    /// Stored bytes do not decode.
    #[error("corrupt checkpoint: {0}")]
    Corrupt(String),
    /// A value could not be stored.
    #[error("cannot checkpoint: {0}")]
    Codec(String),
}

/// The result of running an orchestration from one suspension point to the next.
#[derive(Debug)]
#[non_exhaustive]
pub enum StepResult {
    /// Parked at a new suspension point, issuing a command.
    Suspend {
        /// The new frame.
        frame: Frame,
        /// The command to persist with it and then carry out.
        command: Command,
    },
    /// Returned `Ok`: the encoded value.
    Complete(Vec<u8>),
    /// Returned `Err`: its message and encoded value.
    Fail {
        /// The error's `Display`.
        message: String,
        /// The encoded error.
        payload: Vec<u8>,
    },
    /// The step could not run.
    Fault(Fault),
}

/// An orchestration, implemented by `#[orchestration]`; not meant to be implemented by hand.
pub trait Orchestration: Send + Sync + 'static {
    /// The input: the single parameter after the context, or a tuple of them.
    type Input: Persistable + Send;
    /// The return type.
    type Output: OrchestrationOutput;
    /// The name instances are stored under.
    const NAME: &'static str;
    /// The suspension points of this build.
    fn points(&self) -> &'static [PointInfo];
    /// Registers the activities this orchestration calls.
    fn register_activities(&self, registry: &mut ActivityRegistry);
    /// Runs one step.
    fn step(&self, ctx: &Ctx, resume: Resume<'_>) -> StepResult;
}

/// An orchestration behind a name.
pub(crate) trait ErasedOrchestration: Send + Sync {
    fn step(&self, ctx: &Ctx, resume: Resume<'_>) -> StepResult;
}

pub(crate) struct ErasedOrch<O>(pub(crate) O);

impl<O: Orchestration> ErasedOrchestration for ErasedOrch<O> {
    fn step(&self, ctx: &Ctx, resume: Resume<'_>) -> StepResult {
        self.0.step(ctx, resume)
    }
}

/// What an activity returns: a `Result` whose both sides can be stored.
#[diagnostic::on_unimplemented(
    message = "an activity must return `Result<T, E>` with storable `T` and `E: Display`, not `{Self}`",
    label = "the return type must be `Result<T, E>`",
    note = "`T` and `E` must implement `Serialize` and `DeserializeOwned`; the error is recorded and handed to the orchestration"
)]
pub trait ActivityOutput {
    /// The success value.
    type Ok: Persistable + Send;
    /// The error value.
    type Err: Persistable + fmt::Display + Send;
    /// Splits into the two sides.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> ActivityOutput for Result<T, E>
where
    T: Persistable + Send,
    E: Persistable + fmt::Display + Send,
{
    type Ok = T;
    type Err = E;
    fn into_result(self) -> Result<T, E> {
        self
    }
}
