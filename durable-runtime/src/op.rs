//! Durable operations: what an orchestration may `.await`, the command each one issues and the
//! completion that resumes it.
//!
//! Over 400 lines on purpose: each operation type sits next to its `DurableOp` impl, which maps
//! it to the stored `Command` and back from the `Completion` declared here; they change together.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::activity::Activity;
pub use crate::activity::ActivityFailure;
use crate::codec::{self, CodecError};
pub use crate::event::{EventError, SendError};
pub use crate::retry::{ActivityError, RetryPolicy};

/// What a suspension point asks the runtime to do; persisted with the frame before it is carried
/// out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// Run an activity with a recorded input.
    Activity {
        /// The activity's stable name.
        name: String,
        /// The encoded input.
        input: Vec<u8>,
        /// Retries and timeouts.
        policy: RetryPolicy,
    },
    /// Wake at this time (milliseconds since the Unix epoch, on the runtime's clock).
    Timer {
        /// When.
        fire_at_ms: u64,
    },
    /// Take the oldest buffered event of this name, or wait for one.
    Event {
        /// The event name.
        name: String,
        /// Give up at this time.
        timeout_at_ms: Option<u64>,
    },
    /// Run a sub-orchestration to its end.
    Child {
        /// The child's orchestration name.
        orchestration: String,
        /// The encoded input.
        input: Vec<u8>,
        /// A chosen id; derived from the parent's id and step when absent.
        id: Option<String>,
        /// How often the child is started again after it failed (each attempt under an id of
        /// its own). Format version 3.
        policy: RetryPolicy,
    },
    /// All of these, results in order.
    Join(Vec<Command>),
    /// The first of these to finish.
    Race(Vec<Command>),
    /// Start the instance over with this input.
    ContinueAsNew {
        /// The new encoded input.
        input: Vec<u8>,
    },
    /// Raise event `name` for another instance, once. Format version 3.
    SendEvent {
        /// The receiving instance.
        instance: String,
        /// The event name.
        name: String,
        /// The payload, encoded with its type as `Runtime::raise_event` encodes it.
        payload: Vec<u8>,
    },
}

impl Command {
    /// A short description for logs and step reports.
    pub fn describe(&self) -> String {
        match self {
            Command::Activity { name, .. } => name.clone(),
            Command::Timer { .. } => "timer".into(),
            Command::Event { name, .. } => format!("event `{name}`"),
            Command::Child { orchestration, .. } => format!("sub-orchestration {orchestration}"),
            Command::Join(ops) => format!("join of {}", ops.len()),
            Command::Race(ops) => format!("race of {}", ops.len()),
            Command::ContinueAsNew { .. } => "continue as new".into(),
            Command::SendEvent { instance, name, .. } => {
                format!("send event `{name}` to `{}`", crate::ids::shown_id(instance))
            }
        }
    }

    /// The operations the runtime carries out: the branches of a join or race, or itself.
    pub fn leaves(&self) -> &[Command] {
        match self {
            Command::Join(ops) | Command::Race(ops) => ops,
            other => std::slice::from_ref(other),
        }
    }
}

/// The result of a command, handed to the suspension point that issued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Completion {
    /// An activity finished: its encoded `Ok` value, or why it failed.
    Activity(Result<Vec<u8>, ActivityFailure>),
    /// A timer fired.
    Timer,
    /// An event arrived (its encoded payload), or the wait timed out (`None`).
    Event {
        /// The event name.
        name: String,
        /// The encoded payload; `None` when the wait timed out.
        payload: Option<Vec<u8>>,
    },
    /// A sub-orchestration ended: its encoded output, or how it failed.
    Child(Result<Vec<u8>, ChildFailure>),
    /// Every branch of a join, in order.
    Join(Vec<Completion>),
    /// The branch of a race that finished first.
    Race {
        /// Its position.
        index: u32,
        /// Its completion.
        completion: Box<Completion>,
    },
    /// An event was sent (delivered to the receiver's inbox once), or why it was not. Format
    /// version 3.
    SendEvent(Result<(), SendError>),
}

/// How a sub-orchestration failed, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChildFailure {
    /// It returned `Err` (encoded when it has a value) or faulted.
    Failed {
        /// What went wrong.
        message: String,
        /// The encoded error value, when it returned one.
        payload: Option<Vec<u8>>,
    },
    /// It was cancelled.
    Cancelled(String),
    /// The child could not be started (its id is taken by another orchestration…).
    NotStarted(String),
}

/// A general-purpose orchestration error: a message. Any [`ActivityError`] converts into it, so
/// `?` works on activity calls in an orchestration returning `Result<T, Failure>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    message: String,
}

impl Failure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl<E: fmt::Display> From<ChildError<E>> for Failure {
    fn from(e: ChildError<E>) -> Self {
        Failure::new(e.to_string())
    }
}

impl From<CompletionMismatch> for Failure {
    fn from(e: CompletionMismatch) -> Self {
        Failure::new(e.0)
    }
}

impl From<EventError> for Failure {
    fn from(e: EventError) -> Self {
        Failure::new(e.to_string())
    }
}

impl<E: fmt::Display> From<ActivityError<E>> for Failure {
    fn from(e: ActivityError<E>) -> Self {
        Failure::new(e.to_string())
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::new(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::new(message)
    }
}

/// A completion did not fit the suspension point it was handed to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CompletionMismatch(pub String);

/// Something an orchestration can `.await`: it issues a [`Command`] and is resumed by its
/// [`Completion`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a durable operation",
    label = "an orchestration can only `.await` durable operations",
    note = "do side effects in an `#[activity]` and call it with `ctx.call(activity, input)`; \
            wait with `ctx.sleep(..)`; wait for a signal with `ctx.wait_event(..)`; a \
            `#[durable_fn]` call is awaited on its own, not inside `join`/`race` (run parallel \
            branches as sub-orchestrations, `ctx.child(..)`)"
)]
pub trait DurableOp {
    /// The value the `.await` produces.
    type Output;
    /// The command to persist and dispatch.
    fn into_command(self) -> Result<Command, CodecError>;
    /// Turns the stored completion into the output.
    fn complete(completion: Completion) -> Result<Self::Output, CompletionMismatch>;
}

/// A call of activity `A`, made with `ctx.call(a, input)`; `.await` it in an orchestration.
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct Call<A: Activity> {
    input: A::Input,
    policy: RetryPolicy,
    _activity: PhantomData<fn() -> A>,
}

impl<A: Activity> Call<A> {
    pub(crate) fn new(input: A::Input) -> Self {
        Self { input, policy: A::retry_policy(), _activity: PhantomData }
    }

    /// Retries and timeouts for this call. A timeout set with
    /// [`with_timeout`](Self::with_timeout) is kept unless `policy` sets its own, so the two
    /// calls can come in either order.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        let timeout = self.policy.attempt_timeout;
        self.policy = policy;
        if self.policy.attempt_timeout.is_none() {
            self.policy.attempt_timeout = timeout;
        }
        self
    }

    /// A per-attempt timeout for this call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.policy.attempt_timeout = Some(timeout);
        self
    }
}

impl<A: Activity> DurableOp for Call<A> {
    type Output = Result<A::Ok, ActivityError<A::Err>>;

    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::Activity {
            name: A::NAME.to_owned(),
            input: codec::encode(&self.input)?,
            policy: self.policy,
        })
    }

    fn complete(completion: Completion) -> Result<Self::Output, CompletionMismatch> {
        let bad = |e: CodecError| CompletionMismatch(format!("activity `{}`: {e}", A::NAME));
        match completion {
            Completion::Activity(Ok(bytes)) => Ok(Ok(codec::decode(&bytes).map_err(bad)?)),
            Completion::Activity(Err(f)) => Ok(Err(match f {
                ActivityFailure::Error { payload, .. } => {
                    ActivityError::Failed(codec::decode(&payload).map_err(bad)?)
                }
                ActivityFailure::Panicked(m) => ActivityError::Panicked(m),
                ActivityFailure::TimedOut(d) => ActivityError::TimedOut(d),
                ActivityFailure::NotRegistered(n) => ActivityError::NotRegistered(n),
                ActivityFailure::Rejected(m) => ActivityError::Rejected(m),
            })),
            other => Err(mismatch("an activity call", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            backoff_factor: 3,
            max_backoff: Duration::from_millis(500),
            ..RetryPolicy::attempts(5)
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(300));
        assert_eq!(p.backoff(3), Duration::from_millis(500));
        assert_eq!(p.backoff(9), Duration::from_millis(500));
    }

    #[test]
    fn a_retry_that_would_begin_after_the_retry_timeout_is_not_made() {
        // Backoffs 10 s, 20 s, 40 s…; all attempts within 60 s of the call, issued at 1000 ms.
        let p = RetryPolicy::attempts(10)
            .backoff_from(Duration::from_secs(10))
            .retry_timeout(Duration::from_secs(60));
        assert_eq!(p.next_attempt_at(1, 1_000, 2_000), Some(12_000));
        assert_eq!(p.next_attempt_at(2, 1_000, 13_000), Some(33_000));
        // The third backoff (40 s) would end at 74 s, past 61 s: give up now, no final sleep.
        assert_eq!(p.next_attempt_at(3, 1_000, 34_000), None);
        // Ending exactly at the timeout is still within it.
        assert_eq!(p.next_attempt_at(2, 1_000, 41_000), Some(61_000));
        // Without a timeout only the attempts count.
        let p = RetryPolicy::attempts(3);
        assert_eq!(p.next_attempt_at(2, 0, u64::MAX - 5), Some(u64::MAX));
        assert_eq!(p.next_attempt_at(3, 0, 0), None);
    }

    struct Noop;
    impl Activity for Noop {
        type Input = ();
        type Ok = ();
        type Err = String;
        const NAME: &'static str = "noop";
        #[allow(clippy::manual_async_fn, reason = "the trait asks for a `'static` future")]
        fn invoke(
            &self,
            _: crate::ActivityContext,
            _: (),
        ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
            async { Ok(()) }
        }
    }

    #[test]
    fn timeout_survives_a_later_retry_policy_in_either_order() {
        let t = Duration::from_millis(500);
        let a = Call::<Noop>::new(()).with_timeout(t).with_retry(RetryPolicy::attempts(3));
        let b = Call::<Noop>::new(()).with_retry(RetryPolicy::attempts(3)).with_timeout(t);
        for call in [a, b] {
            assert_eq!(call.policy.attempt_timeout, Some(t));
            assert_eq!(call.policy.max_attempts, 3);
        }
        let own =
            RetryPolicy { attempt_timeout: Some(Duration::from_secs(9)), ..RetryPolicy::default() };
        let c = Call::<Noop>::new(()).with_timeout(t).with_retry(own);
        assert_eq!(c.policy.attempt_timeout, Some(Duration::from_secs(9)), "the policy's own wins");
    }
}

/// Lets an orchestration's original body type-check as an ordinary `async fn` (the macro keeps
/// it when it reports errors, so that rustc's own errors in it still show). Outside a step
/// machine nothing can run a durable operation: polling panics.
macro_rules! outside_orchestration {
    ($( [$($g:tt)*] $t:ty ),* $(,)?) => {$(
        impl<$($g)*> std::future::IntoFuture for $t {
            type Output = <Self as DurableOp>::Output;
            type IntoFuture = NotInAnOrchestration<Self::Output>;
            fn into_future(self) -> Self::IntoFuture {
                NotInAnOrchestration(PhantomData)
            }
        }
    )*};
}

outside_orchestration!(
    [A: Activity] Call<A>,
    [] Sleep,
    [T: crate::Persistable] WaitEvent<T>,
    [O: crate::Orchestration] Child<O>,
    [O: crate::Orchestration] ContinueAsNew<O>,
    [] SendEvent,
    [O: DurableOp] Join<O>,
    [A: DurableOp, B: DurableOp] Join2<A, B>,
    [O: DurableOp] Race<O>,
    [A: DurableOp, B: DurableOp] Race2<A, B>,
    [] AnyOp,
);

/// The future of a durable operation awaited outside an `#[orchestration]`; it panics if
/// polled.
#[derive(Debug)]
pub struct NotInAnOrchestration<T>(PhantomData<fn() -> T>);

impl<T> std::future::Future for NotInAnOrchestration<T> {
    type Output = T;
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        panic!("durable operations can only be awaited in the body of an #[orchestration]")
    }
}

/// The error of a sub-orchestration as its parent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChildError<E> {
    /// The child returned this error.
    Failed(E),
    /// The child failed without an error value (panic, corrupt checkpoint…).
    Faulted(String),
    /// The child was cancelled, with this reason.
    Cancelled(String),
    /// The child could not be started.
    NotStarted(String),
}

impl<E: fmt::Display> fmt::Display for ChildError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildError::Failed(e) => write!(f, "sub-orchestration failed: {e}"),
            ChildError::Faulted(m) => write!(f, "sub-orchestration faulted: {m}"),
            ChildError::Cancelled(r) => write!(f, "sub-orchestration cancelled: {r}"),
            ChildError::NotStarted(m) => write!(f, "sub-orchestration not started: {m}"),
        }
    }
}

fn mismatch(what: &str, c: &Completion) -> CompletionMismatch {
    CompletionMismatch(format!("{what} resumed with {c:?}"))
}

/// A durable timer: `ctx.sleep(d)` or `ctx.sleep_until(t)`.
#[must_use = "a durable operation does nothing until it is `.await`ed"]
#[derive(Debug, Clone)]
pub struct Sleep {
    pub(crate) fire_at_ms: u64,
}

impl DurableOp for Sleep {
    type Output = ();
    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::Timer { fire_at_ms: self.fire_at_ms })
    }
    fn complete(c: Completion) -> Result<(), CompletionMismatch> {
        match c {
            Completion::Timer => Ok(()),
            other => Err(mismatch("a timer", &other)),
        }
    }
}

/// Waiting for the external event `name` with a payload of type `T`: `ctx.wait_event(name)`.
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct WaitEvent<T> {
    pub(crate) name: String,
    pub(crate) now_ms: u64,
    pub(crate) timeout_at_ms: Option<u64>,
    pub(crate) _t: PhantomData<fn() -> T>,
}

impl<T> WaitEvent<T> {
    /// Gives up after `timeout` (from now, on the runtime's clock) with
    /// [`EventError::TimedOut`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_at_ms = Some(self.now_ms.saturating_add(crate::clock::ms(timeout)));
        self
    }
}

impl<T: crate::Persistable> DurableOp for WaitEvent<T> {
    type Output = Result<T, EventError>;
    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::Event { name: self.name, timeout_at_ms: self.timeout_at_ms })
    }
    fn complete(c: Completion) -> Result<Self::Output, CompletionMismatch> {
        match c {
            Completion::Event { name, payload: Some(bytes) } => {
                Ok(crate::event::decode(&name, &bytes))
            }
            Completion::Event { name, payload: None } => Ok(Err(EventError::TimedOut(name))),
            other => Err(mismatch("an event wait", &other)),
        }
    }
}

/// A sub-orchestration: `ctx.child(orchestration, input)`.
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct Child<O: crate::Orchestration> {
    pub(crate) input: O::Input,
    pub(crate) id: Option<String>,
    pub(crate) policy: RetryPolicy,
}

impl<O: crate::Orchestration> Child<O> {
    /// Runs the child under this id instead of one derived from the parent's.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Starts the child again when it fails, by `policy` (attempts, backoff, retry timeout; the
    /// attempt timeout does not apply to a sub-orchestration). Each attempt is an instance of
    /// its own: the first runs under the child's id, attempt `n` under that id followed by
    /// `#n` (`~order-1:2#2`, `invoice-7#3`), so every failed attempt stays inspectable. The
    /// parent sees the last attempt's result.
    ///
    /// A child that returned `Err` or faulted (panicked, unreadable checkpoint…) is retried; one
    /// that was cancelled, or could not be started (its id is taken by another orchestration…),
    /// is not: the parent gets that error at once.
    ///
    /// In an orchestration, `ctx.child(charge, amount).with_retry(policy).await`; here as a
    /// helper that builds the operation:
    ///
    /// ```
    /// use std::time::Duration;
    /// use durable_runtime::{Child, Ctx, Orchestration, RetryPolicy};
    ///
    /// /// Up to three attempts of `charge`, 5 s then 10 s apart, all within a minute.
    /// # #[allow(dead_code)]
    /// fn charge_patiently<O: Orchestration>(
    ///     ctx: &Ctx,
    ///     charge: fn() -> O,
    ///     input: O::Input,
    /// ) -> Child<O> {
    ///     let policy = RetryPolicy::attempts(3)
    ///         .backoff_from(Duration::from_secs(5))
    ///         .retry_timeout(Duration::from_secs(60));
    ///     ctx.child(charge, input).with_retry(policy)
    /// }
    /// ```
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }
}

impl<O: crate::Orchestration> DurableOp for Child<O> {
    type Output = Result<
        <O::Output as crate::OrchestrationOutput>::Ok,
        ChildError<<O::Output as crate::OrchestrationOutput>::Err>,
    >;
    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::Child {
            orchestration: O::NAME.into(),
            input: codec::encode(&self.input)?,
            id: self.id,
            policy: self.policy,
        })
    }
    fn complete(c: Completion) -> Result<Self::Output, CompletionMismatch> {
        let bad =
            |e: CodecError| CompletionMismatch(format!("sub-orchestration `{}`: {e}", O::NAME));
        match c {
            Completion::Child(Ok(bytes)) => Ok(Ok(codec::decode(&bytes).map_err(bad)?)),
            Completion::Child(Err(ChildFailure::Failed { payload: Some(p), .. })) => {
                Ok(Err(ChildError::Failed(codec::decode(&p).map_err(bad)?)))
            }
            Completion::Child(Err(ChildFailure::Failed { message, payload: None })) => {
                Ok(Err(ChildError::Faulted(message)))
            }
            Completion::Child(Err(ChildFailure::Cancelled(r))) => Ok(Err(ChildError::Cancelled(r))),
            Completion::Child(Err(ChildFailure::NotStarted(m))) => {
                Ok(Err(ChildError::NotStarted(m)))
            }
            other => Err(mismatch("a sub-orchestration", &other)),
        }
    }
}

/// Raising event `name` for another instance: `ctx.send_event(instance, name, &payload)`; see
/// [`Ctx::send_event`](crate::Ctx::send_event).
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct SendEvent {
    pub(crate) instance: String,
    pub(crate) name: String,
    pub(crate) payload: Result<Vec<u8>, CodecError>,
}

impl DurableOp for SendEvent {
    type Output = Result<(), SendError>;
    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::SendEvent { instance: self.instance, name: self.name, payload: self.payload? })
    }
    fn complete(c: Completion) -> Result<Self::Output, CompletionMismatch> {
        match c {
            Completion::SendEvent(result) => Ok(result),
            other => Err(mismatch("an event sent", &other)),
        }
    }
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        Failure::new(e.to_string())
    }
}

/// Starting the instance over: `return ctx.continue_as_new(orchestration, input).await;`.
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct ContinueAsNew<O: crate::Orchestration> {
    pub(crate) input: O::Input,
}

impl<O: crate::Orchestration> DurableOp for ContinueAsNew<O> {
    type Output = O::Output;
    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::ContinueAsNew { input: codec::encode(&self.input)? })
    }
    fn complete(c: Completion) -> Result<Self::Output, CompletionMismatch> {
        Err(mismatch("continue-as-new", &c))
    }
}

/// All of several operations of one kind, results in the order given: `ctx.join(ops)`.
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct Join<O>(pub(crate) Vec<O>);

impl<O: DurableOp> DurableOp for Join<O> {
    type Output = Vec<O::Output>;
    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::Join(self.0.into_iter().map(O::into_command).collect::<Result<_, _>>()?))
    }
    fn complete(c: Completion) -> Result<Self::Output, CompletionMismatch> {
        match c {
            Completion::Join(all) => all.into_iter().map(O::complete).collect(),
            other => Err(mismatch("a join", &other)),
        }
    }
}

/// Two operations of different kinds, both: `ctx.join2(a, b)`.
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct Join2<A, B>(pub(crate) A, pub(crate) B);

impl<A: DurableOp, B: DurableOp> DurableOp for Join2<A, B> {
    type Output = (A::Output, B::Output);
    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::Join(vec![self.0.into_command()?, self.1.into_command()?]))
    }
    fn complete(c: Completion) -> Result<Self::Output, CompletionMismatch> {
        match c {
            Completion::Join(all) if all.len() == 2 => {
                let mut it = all.into_iter();
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => Ok((A::complete(a)?, B::complete(b)?)),
                    _ => Err(CompletionMismatch("join of two: missing branch".into())),
                }
            }
            other => Err(mismatch("a join of two", &other)),
        }
    }
}

/// The first of several operations of one kind to finish, and which it was: `ctx.race(ops)`.
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct Race<O>(pub(crate) Vec<O>);

impl<O: DurableOp> DurableOp for Race<O> {
    type Output = (usize, O::Output);
    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::Race(self.0.into_iter().map(O::into_command).collect::<Result<_, _>>()?))
    }
    fn complete(c: Completion) -> Result<Self::Output, CompletionMismatch> {
        match c {
            Completion::Race { index, completion } => {
                Ok((usize::try_from(index).unwrap_or(usize::MAX), O::complete(*completion)?))
            }
            other => Err(mismatch("a race", &other)),
        }
    }
}

/// Which of two raced operations finished first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Either<A, B> {
    /// The first.
    Left(A),
    /// The second.
    Right(B),
}

/// The first of two operations of different kinds: `ctx.race2(a, b)`.
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct Race2<A, B>(pub(crate) A, pub(crate) B);

impl<A: DurableOp, B: DurableOp> DurableOp for Race2<A, B> {
    type Output = Either<A::Output, B::Output>;
    fn into_command(self) -> Result<Command, CodecError> {
        Ok(Command::Race(vec![self.0.into_command()?, self.1.into_command()?]))
    }
    fn complete(c: Completion) -> Result<Self::Output, CompletionMismatch> {
        match c {
            Completion::Race { index: 0, completion } => {
                Ok(Either::Left(A::complete(*completion)?))
            }
            Completion::Race { index: 1, completion } => {
                Ok(Either::Right(B::complete(*completion)?))
            }
            other => Err(mismatch("a race of two", &other)),
        }
    }
}

/// Any durable operation with its result type erased, for joins and races over operations of
/// mixed kinds: `op.into_any()`; read each result back with [`AnyOutput::get`].
#[must_use = "a durable operation does nothing until it is `.await`ed"]
pub struct AnyOp(Result<Command, CodecError>);

/// The result of an [`AnyOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnyOutput(Completion);

impl AnyOutput {
    /// The result as the output of operation type `O` (the type the op had before `into_any`).
    pub fn get<O: DurableOp>(self) -> Result<O::Output, CompletionMismatch> {
        O::complete(self.0)
    }
}

/// Erases an operation's result type.
pub trait IntoAnyOp: DurableOp + Sized {
    /// This operation as an [`AnyOp`].
    fn into_any(self) -> AnyOp {
        AnyOp(self.into_command())
    }
}

impl<O: DurableOp> IntoAnyOp for O {}

impl DurableOp for AnyOp {
    type Output = AnyOutput;
    fn into_command(self) -> Result<Command, CodecError> {
        self.0
    }
    fn complete(c: Completion) -> Result<AnyOutput, CompletionMismatch> {
        Ok(AnyOutput(c))
    }
}
