//! Orchestrations: the step machines `#[orchestration]` generates, and the context they run with.
//!
//! Over 400 lines on purpose: `Ctx`'s methods are the orchestration API (one short method each)
//! and sit with the `Orchestration` trait and the registry that generated code fills.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Mutex;

use crate::Persistable;
use crate::activity::{Activity, ActivityRegistry};
use crate::codec;
use crate::op::{
    Call, Child, Command, Completion, ContinueAsNew, DurableOp, Join, Join2, Race, Race2,
    RetryPolicy, SendEvent, Sleep, WaitEvent,
};
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
    rng: Mutex<u64>,
    status: Mutex<Option<Vec<u8>>>,
    /// Activities and sub-orchestrations this step created operations for, however the code
    /// that did it was written (`ctx.call(a, ..)`, a helper taking `&Ctx`, a renamed context).
    used: Mutex<Registry>,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").field("instance_id", &self.inner.instance_id).finish()
    }
}

impl Ctx {
    pub(crate) fn new(instance_id: &str, now_ms: u64, step: u64) -> Self {
        // Seeded by the instance and step: a step that runs again after a crash draws the same
        // values, and tests can predict them.
        let mut seed = 0xcbf2_9ce4_8422_2325_u64 ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in instance_id.bytes() {
            seed = (seed ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self {
            inner: Arc::new(CtxInner {
                instance_id: instance_id.to_owned(),
                now_ms,
                rng: Mutex::new(seed | 1),
                status: Mutex::new(None),
                used: Mutex::new(Registry::default()),
            }),
        }
    }

    /// A context for code that runs no step (a machine in register mode).
    pub(crate) fn detached() -> Self {
        Self::new("", 0, 0)
    }

    pub(crate) fn take_status(&self) -> Option<Vec<u8>> {
        self.inner.status.lock().ok()?.take()
    }

    /// What this step's operations need registered before their commands go out.
    pub(crate) fn take_used(&self) -> Registry {
        self.inner.used.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }

    /// The id of the running instance.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Calls activity `activity` with `input`; `.await` the result.
    ///
    /// The input is recorded in the checkpoint before the activity runs; the activity runs at
    /// least once and its result (or error) is recorded before the orchestration continues.
    ///
    /// The activity needs no separate registration: the runtime learns it from the call, however
    /// the call is written (a helper that takes `&Ctx` and returns the [`Call`] works too). Only
    /// an instance that a restarted process resumes while such a call is pending needs the
    /// activity registered up front, with [`RuntimeBuilder::activity`](crate::RuntimeBuilder::activity)
    /// or [`Runtime::register_activity`](crate::Runtime::register_activity) (until then it
    /// waits); activities named as `ctx.call(path, ..)` in the orchestration's body are
    /// registered with it.
    pub fn call<A: Activity>(&self, activity: impl FnOnce() -> A, input: A::Input) -> Call<A> {
        if let Ok(mut used) = self.inner.used.lock()
            && !used.activities.by_name.contains_key(A::NAME)
        {
            used.add_activity(activity);
        }
        Call::new(input)
    }

    /// The time at which this step started, from the runtime's clock. Keep it in a local to
    /// have it recorded in the checkpoint.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.inner.now_ms)
    }

    /// A random number from the runtime's generator (seeded by instance and step).
    pub fn random(&self) -> u64 {
        let Ok(mut x) = self.inner.rng.lock() else { return 0 };
        // xorshift64*
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A random (version 4) UUID from the runtime's generator, as text.
    pub fn uuid(&self) -> String {
        let (a, b) = (self.random(), self.random());
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    /// Sets the custom status clients read; stored with the next checkpoint. Any serializable
    /// value, unsized ones included: `ctx.set_status("waiting")`, `ctx.set_status(&progress)`.
    pub fn set_status<T: serde::Serialize + ?Sized>(&self, status: &T) {
        if let (Ok(bytes), Ok(mut slot)) = (codec::encode(status), self.inner.status.lock()) {
            *slot = Some(bytes);
        }
    }

    /// A durable timer: `.await` it to sleep for `duration` (on the runtime's clock). A sleeping
    /// instance holds no task (its locals stay in memory, up to a limit of instances, so that
    /// the next step continues with them); a timer that came due while the process was down
    /// fires on the next open.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        Sleep { fire_at_ms: self.inner.now_ms.saturating_add(crate::clock::ms(duration)) }
    }

    /// A durable timer until `time`.
    pub fn sleep_until(&self, time: SystemTime) -> Sleep {
        Sleep { fire_at_ms: crate::clock::ms(time.duration_since(UNIX_EPOCH).unwrap_or_default()) }
    }

    /// Waits for the external event `name` and decodes its payload as `T`. Events raised before
    /// the wait are buffered, first in first out per name.
    pub fn wait_event<T: Persistable>(&self, name: impl Into<String>) -> WaitEvent<T> {
        WaitEvent {
            name: name.into(),
            now_ms: self.inner.now_ms,
            timeout_at_ms: None,
            _t: std::marker::PhantomData,
        }
    }

    /// Raises event `name` with `payload` for instance `instance` (DTFx `SendEvent`, DBOS
    /// `send`); `.await` it. The receiver takes it with
    /// [`wait_event`](Self::wait_event) like an event a client raised with
    /// [`Runtime::raise_event`](crate::Runtime::raise_event): buffered first in, first out per
    /// name, and typed (a wait for another type gets `EventError::WrongType`).
    ///
    /// A durable operation, delivered exactly once: the event is appended to the receiver's
    /// inbox under a key made of this instance and operation, and the store appends a key
    /// only once. When this instance's process dies after the delivery and before its
    /// checkpoint, the operation runs again after the restart and finds the key: the receiver
    /// gets the event once, and this instance continues as if nothing happened.
    ///
    /// When it cannot be delivered, the orchestration gets a [`SendError`](crate::SendError) it
    /// can handle: no such instance ([`NotFound`](crate::SendError::NotFound)), one that has
    /// ended ([`Finished`](crate::SendError::Finished); DTFx drops such an event silently, here
    /// the sender is told), or a refused payload. An instance may send to itself.
    ///
    /// In an orchestration, `ctx.send_event("order-7", "approval", &true).await`; here as a
    /// helper that builds the operation:
    ///
    /// ```
    /// use durable_runtime::{Ctx, SendEvent};
    ///
    /// /// Tells the order that it is approved.
    /// # #[allow(dead_code)]
    /// fn approve(ctx: &Ctx, order: &str) -> SendEvent {
    ///     ctx.send_event(order, "approval", &true)
    /// }
    /// ```
    pub fn send_event<T: Persistable>(
        &self,
        instance: impl Into<String>,
        name: impl Into<String>,
        payload: &T,
    ) -> SendEvent {
        SendEvent {
            instance: instance.into(),
            name: name.into(),
            payload: crate::event::encode_typed(payload),
        }
    }

    /// Runs `orchestration` as a sub-orchestration; its failure arrives as `Err`. The child's id
    /// is derived from this instance's id and step unless set with [`Child::with_id`].
    pub fn child<O: Orchestration>(
        &self,
        orchestration: impl FnOnce() -> O,
        input: O::Input,
    ) -> Child<O> {
        if let Ok(mut used) = self.inner.used.lock()
            && !used.orchestrations.contains_key(&(O::NAME, O::VERSION))
        {
            used.add_orchestration(orchestration);
        }
        Child { input, id: None, policy: RetryPolicy::default() }
    }

    /// Starts this instance over with `input`: `return ctx.continue_as_new(me, input).await;`.
    pub fn continue_as_new<O: Orchestration>(
        &self,
        orchestration: impl FnOnce() -> O,
        input: O::Input,
    ) -> ContinueAsNew<O> {
        let _ = orchestration;
        ContinueAsNew { input }
    }

    /// All of `ops`, results in the order given. Each branch's result is stored as it arrives.
    pub fn join<O: DurableOp>(&self, ops: impl IntoIterator<Item = O>) -> Join<O> {
        Join(ops.into_iter().collect())
    }

    /// Both `a` and `b`, of different kinds.
    pub fn join2<A: DurableOp, B: DurableOp>(&self, a: A, b: B) -> Join2<A, B> {
        Join2(a, b)
    }

    /// The first of `ops` to finish: its position and result. The others are abandoned
    /// (running activities are stopped).
    pub fn race<O: DurableOp>(&self, ops: impl IntoIterator<Item = O>) -> Race<O> {
        Race(ops.into_iter().collect())
    }

    /// The first of `a` and `b` to finish.
    pub fn race2<A: DurableOp, B: DurableOp>(&self, a: A, b: B) -> Race2<A, B> {
        Race2(a, b)
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

// A failed bound is reported as the return type not being an `OrchestrationOutput`, with the
// message above, rather than as the `Serialize`/`Display` bounds of `T` or `E`.
#[diagnostic::do_not_recommend]
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

/// How a step starts: from the input, from a saved frame, or from the state the previous step
/// of this process left in memory; each with the completion of the point's command.
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
    /// A later step in the process that ran the previous one: the machine's state as that step
    /// left it (the very values, not decoded copies), and the frame saved with it, which the
    /// machine decodes instead when the state is not of its type.
    Live {
        /// The frame saved at the suspension point.
        frame: &'a Frame,
        /// The state the previous step suspended with.
        state: LiveState,
        /// The completion of the point's command.
        completion: Completion,
    },
}

/// The state of a suspended orchestration, kept in memory between two steps in one process: its
/// live locals themselves, so that within a process they are exactly the values plain Rust
/// would have (fields that `#[serde(skip)]` leaves out of the checkpoint included), and they are
/// dropped when plain Rust would drop them rather than at every checkpoint.
pub struct LiveState(Box<dyn Any + Send>);

impl LiveState {
    /// Keeps `state`.
    pub fn new<S: Any + Send>(state: S) -> Self {
        Self(Box::new(state))
    }

    /// The state, if it is an `S`.
    pub fn take<S: Any>(self) -> Option<S> {
        self.0.downcast::<S>().ok().map(|b| *b)
    }
}

impl fmt::Debug for LiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveState(..)")
    }
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
#[allow(
    clippy::large_enum_variant,
    reason = "made once per step and handed on in a `Box` (`Step::Exit`); boxing the command \
              as well would add an allocation per step for nothing"
)]
pub enum StepResult {
    /// Parked at a new suspension point, issuing a command.
    Suspend {
        /// The new frame.
        frame: Frame,
        /// The command to persist with it and then carry out.
        command: Command,
        /// The state itself, for the next step if it runs in this process.
        live: Option<LiveState>,
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
    /// The version: several versions of one name can be registered side by side; new instances
    /// start on the newest, running ones finish on the one they started with.
    const VERSION: u32 = 1;
    /// The suspension points of this build.
    fn points(&self) -> &'static [PointInfo];
    /// Registers the activities and sub-orchestrations this orchestration names.
    fn register(&self, registry: &mut Registry);
    /// Runs one step.
    fn step(&self, ctx: &Ctx, resume: Resume<'_>) -> StepResult;
    /// The step graph: points, stored locals with their types, control-flow edges.
    fn graph(&self) -> crate::graph::StepGraph {
        crate::graph::StepGraph {
            name: Self::NAME.to_owned(),
            version: Self::VERSION,
            points: Vec::new(),
            edges: Vec::new(),
        }
    }
    /// The locals of `frame` (a frame of this orchestration) decoded with their real types.
    fn render(&self, _frame: &Frame) -> Result<crate::graph::RenderedFrame, Fault> {
        Err(Fault::Incompatible(format!("`{}` cannot render frames", Self::NAME)))
    }
}

/// An orchestration behind a name.
pub(crate) trait ErasedOrchestration: Send + Sync {
    fn step(&self, ctx: &Ctx, resume: Resume<'_>) -> StepResult;
    fn input_type(&self) -> &'static str;
    fn graph(&self) -> crate::graph::StepGraph;
    fn render(&self, frame: &Frame) -> Result<crate::graph::RenderedFrame, Fault>;
}

pub(crate) struct ErasedOrch<O>(pub(crate) O);

impl<O: Orchestration> ErasedOrchestration for ErasedOrch<O> {
    fn step(&self, ctx: &Ctx, resume: Resume<'_>) -> StepResult {
        self.0.step(ctx, resume)
    }
    fn input_type(&self) -> &'static str {
        std::any::type_name::<O::Input>()
    }
    fn graph(&self) -> crate::graph::StepGraph {
        self.0.graph()
    }
    fn render(&self, frame: &Frame) -> Result<crate::graph::RenderedFrame, Fault> {
        self.0.render(frame)
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

// A failed bound is reported as the return type not being an `ActivityOutput`, with the
// message above, rather than as the `Serialize`/`Display` bounds of `T` or `E`.
#[diagnostic::do_not_recommend]
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

/// What a runtime knows by name: orchestrations and activities.
#[derive(Default, Clone)]
pub struct Registry {
    pub(crate) orchestrations:
        std::collections::HashMap<(&'static str, u32), Arc<dyn ErasedOrchestration>>,
    pub(crate) activities: ActivityRegistry,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("orchestrations", &self.orchestrations.keys().collect::<Vec<_>>())
            .field("activities", &self.activities)
            .finish()
    }
}

impl Registry {
    /// Registers an activity under its name (replacing one of the same name).
    pub fn add_activity<A: Activity>(&mut self, activity: impl FnOnce() -> A) {
        self.activities.add(activity());
    }

    /// Registers an orchestration under its name (replacing one of the same name), and what it
    /// calls.
    pub fn add_orchestration<O: Orchestration>(&mut self, orchestration: impl FnOnce() -> O) {
        let orchestration = orchestration();
        let erased = Arc::new(ErasedOrch(orchestration));
        let known = self.orchestrations.insert((O::NAME, O::VERSION), erased.clone()).is_some();
        if !known {
            erased.0.register(self);
        }
    }
}
