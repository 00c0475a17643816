//! Durable operations: what an orchestration may `.await`, the command each one issues and the
//! completion that resumes it.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::activity::Activity;
use crate::codec::{self, CodecError};

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
}

impl Command {
    /// A short description for logs and step reports.
    pub fn describe(&self) -> String {
        match self {
            Command::Activity { name, .. } => name.clone(),
        }
    }
}

/// The result of a command, handed to the suspension point that issued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Completion {
    /// An activity finished: its encoded `Ok` value, or why it failed.
    Activity(Result<Vec<u8>, ActivityFailure>),
}

/// Why an activity call failed, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ActivityFailure {
    /// The activity returned `Err`: its message and its encoded value.
    Error {
        /// The error's `Display`.
        message: String,
        /// The encoded error value.
        payload: Vec<u8>,
    },
    /// The activity panicked.
    Panicked(String),
    /// The last attempt exceeded the per-attempt timeout.
    TimedOut(Duration),
    /// No activity of that name is registered in this process.
    NotRegistered(String),
}

/// How often and how long an activity call is attempted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff: Duration,
    /// Factor applied to the delay after each failed attempt.
    pub backoff_factor: u32,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
    /// Time allowed for one attempt; `None` for no limit.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    /// One attempt, no timeout.
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(100),
            backoff_factor: 2,
            max_backoff: Duration::from_secs(60),
            attempt_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts with exponential backoff from 100 ms, capped at 60 s.
    pub fn attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// The delay after `failed` failed attempts (1 for the first failure).
    pub fn backoff(&self, failed: u32) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..failed {
            d = d.saturating_mul(self.backoff_factor);
            if d >= self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }
}

/// The error of an activity call as the orchestration sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ActivityError<E> {
    /// The activity returned this error (on its last attempt).
    Failed(E),
    /// The activity panicked; the message.
    Panicked(String),
    /// The last attempt timed out.
    TimedOut(Duration),
    /// The activity is not registered in the process that ran the call.
    NotRegistered(String),
}

impl<E: fmt::Display> fmt::Display for ActivityError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivityError::Failed(e) => write!(f, "{e}"),
            ActivityError::Panicked(m) => write!(f, "activity panicked: {m}"),
            ActivityError::TimedOut(d) => write!(f, "activity timed out after {d:?}"),
            ActivityError::NotRegistered(n) => write!(f, "activity `{n}` is not registered"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for ActivityError<E> {}

/// A general-purpose orchestration error: a message. Any [`ActivityError`] converts into it, so
/// `?` works on activity calls in an orchestration returning `Result<T, Failure>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    message: String,
}

impl Failure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
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
            wait with `ctx.sleep(..)`; wait for a signal with `ctx.wait_event(..)`"
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
        Self {
            input,
            policy: RetryPolicy::default(),
            _activity: PhantomData,
        }
    }

    /// Retries and timeouts for this call.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
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
            })),
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
}

/// Lets an orchestration's original body type-check as an ordinary `async fn` (the macro keeps
/// it when it reports errors, so that rustc's own errors in it still show). Outside a step
/// machine nothing can run a durable operation: polling panics.
impl<A: Activity> std::future::IntoFuture for Call<A> {
    type Output = <Self as DurableOp>::Output;
    type IntoFuture = NotInAnOrchestration<Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        NotInAnOrchestration(PhantomData)
    }
}

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
