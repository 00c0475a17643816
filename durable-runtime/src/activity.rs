//! Activities: the side-effecting functions an orchestration calls, at least once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Persistable;
use crate::codec;
use crate::retry::{ActivityError, RetryPolicy};

/// What an activity invocation is told about itself.
#[derive(Debug, Clone)]
pub struct ActivityContext {
    pub(crate) instance_id: String,
    pub(crate) idempotency_key: String,
    pub(crate) attempt: u32,
    pub(crate) name: &'static str,
    pub(crate) permanent: Arc<std::sync::atomic::AtomicBool>,
}

impl ActivityContext {
    /// A context for calling an activity directly, outside any runtime (tests, tools).
    pub fn detached(name: &'static str, instance_id: &str, idempotency_key: &str) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
            attempt: 1,
            name,
            permanent: Arc::default(),
        }
    }

    /// Classifies the error this attempt returns as not retryable: the call fails at once with
    /// it, whatever attempts its retry policy has left.
    pub fn do_not_retry(&self) {
        self.permanent.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The instance that made the call.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Stable across every attempt and every re-dispatch after a crash of this one call:
    /// `<instance id>:<step>`. Use it to make the side effect idempotent.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// 1 for the first attempt; grows with each recorded failed attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The activity's stable name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// An activity, implemented by `#[activity]`; not meant to be implemented by hand.
pub trait Activity: Send + Sync + 'static {
    /// The input: the single parameter, or a tuple of the parameters.
    type Input: Persistable + Send;
    /// The `Ok` type of the function's `Result`.
    type Ok: Persistable + Send;
    /// The `Err` type of the function's `Result`.
    type Err: Persistable + fmt::Display + Send;
    /// The name the activity is stored and dispatched under.
    const NAME: &'static str;
    /// Runs the activity body.
    fn invoke(
        &self,
        ctx: ActivityContext,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Ok, Self::Err>> + Send + 'static;

    /// The retry policy of a call that sets none with
    /// [`Call::with_retry`](crate::Call::with_retry): `#[activity(retry = expr)]`, one attempt
    /// without it.
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Whether a failed attempt may be retried (when its policy has attempts left): the
    /// predicate of `#[activity(retry_if = f)]`, every failure without it. Asked about every
    /// failure but those that are never retried (the activity is not registered, or it called
    /// [`ActivityContext::do_not_retry`]).
    fn should_retry(error: &ActivityError<Self::Err>) -> bool {
        let _ = error;
        true
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An activity behind a name, taking and giving bytes.
pub(crate) trait ErasedActivity: Send + Sync {
    fn invoke(
        &self,
        ctx: ActivityContext,
        input: &[u8],
    ) -> BoxFuture<Result<Vec<u8>, ActivityFailure>>;

    /// The activity's [`should_retry`](Activity::should_retry) on a stored failure; `true` for
    /// an error value that no longer decodes (the policy's attempts still bound the retries).
    fn should_retry(&self, failure: &ActivityFailure) -> bool;
}

struct Erased<A>(A);

impl<A: Activity> ErasedActivity for Erased<A> {
    fn invoke(
        &self,
        ctx: ActivityContext,
        input: &[u8],
    ) -> BoxFuture<Result<Vec<u8>, ActivityFailure>> {
        let input: A::Input = match codec::decode(input) {
            Ok(v) => v,
            Err(e) => {
                let message =
                    format!("recorded input of activity `{}` does not decode: {e}", A::NAME);
                return Box::pin(async move { Err(ActivityFailure::Panicked(message)) });
            }
        };
        let permanent = ctx.permanent.clone();
        let fut = self.0.invoke(ctx, input);
        Box::pin(async move {
            match fut.await {
                Ok(v) => {
                    let bytes =
                        codec::encode(&v).map_err(|e| ActivityFailure::Panicked(e.to_string()))?;
                    // Refused here, where its type is known, rather than found unreadable later.
                    codec::check_readable::<A::Ok>(&bytes).map_err(|e| {
                        ActivityFailure::Rejected(format!("result of activity `{}`: {e}", A::NAME))
                    })?;
                    Ok(bytes)
                }
                Err(e) => Err(ActivityFailure::Error {
                    message: e.to_string(),
                    payload: codec::encode(&e)
                        .map_err(|e| ActivityFailure::Panicked(e.to_string()))?,
                    permanent: permanent.load(std::sync::atomic::Ordering::SeqCst),
                }),
            }
        })
    }

    fn should_retry(&self, failure: &ActivityFailure) -> bool {
        let error = match failure {
            ActivityFailure::Error { payload, .. } => match codec::decode(payload) {
                Ok(e) => ActivityError::Failed(e),
                Err(_) => return true,
            },
            ActivityFailure::Panicked(m) => ActivityError::Panicked(m.clone()),
            ActivityFailure::TimedOut(d) => ActivityError::TimedOut(*d),
            ActivityFailure::NotRegistered(n) => ActivityError::NotRegistered(n.clone()),
            ActivityFailure::Rejected(m) => ActivityError::Rejected(m.clone()),
        };
        A::should_retry(&error)
    }
}

/// The activities known to a runtime, by name.
#[derive(Default, Clone)]
pub struct ActivityRegistry {
    pub(crate) by_name: std::collections::HashMap<&'static str, Arc<dyn ErasedActivity>>,
}

impl fmt::Debug for ActivityRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.by_name.keys()).finish()
    }
}

impl ActivityRegistry {
    /// Registers `activity` under its name; a second registration of a name replaces the first.
    pub fn add<A: Activity>(&mut self, activity: A) {
        self.by_name.insert(A::NAME, Arc::new(Erased(activity)));
    }
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
        /// The activity classified it as not retryable (`ActivityContext::do_not_retry`).
        permanent: bool,
    },
    /// The activity panicked.
    Panicked(String),
    /// The last attempt exceeded the per-attempt timeout.
    TimedOut(Duration),
    /// No activity of that name is registered in this process.
    NotRegistered(String),
    /// The attempt's result could not be stored: too large for the instance's record, or it
    /// would not decode again. The message says which.
    Rejected(String),
}
