//! Retries: the policy an activity call or a sub-orchestration is attempted under, and the error
//! an activity call ends with once its attempts are over. Below `op` and `activity`, which both
//! name them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often and how long an activity call, or a sub-orchestration
/// ([`Child::with_retry`](crate::op::Child::with_retry)), is attempted.
///
/// A failed attempt is retried after a backoff while attempts are left, the error is retryable
/// (see [`ActivityContext::do_not_retry`](crate::ActivityContext::do_not_retry) and
/// [`Activity::should_retry`](crate::Activity::should_retry)) and the
/// [`retry_timeout`](Self::retry_timeout) has not passed. The call then fails with the last
/// attempt's error. An activity's own default policy is set with `#[activity(retry = ..)]`
/// ([`Activity::retry_policy`](crate::Activity::retry_policy)); a call's
/// [`with_retry`](crate::op::Call::with_retry) replaces it.
///
/// ```
/// use std::time::Duration;
/// use durable_runtime::RetryPolicy;
///
/// let policy = RetryPolicy::attempts(5)
///     .backoff_from(Duration::from_secs(1))
///     .retry_timeout(Duration::from_secs(30));
/// assert_eq!(policy.backoff(1), Duration::from_secs(1));
/// assert_eq!(policy.backoff(3), Duration::from_secs(4));
/// assert_eq!(policy.retry_timeout, Some(Duration::from_secs(30)));
/// ```
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
    /// Time allowed for one attempt, on the runtime's clock; `None` for no limit. Activities
    /// only: a sub-orchestration is not timed out (race it with a timer).
    pub attempt_timeout: Option<Duration>,
    /// Time allowed for all attempts together, from when the call was issued, on the runtime's
    /// clock (DTFx `RetryTimeout`); `None` for no limit. A retry that would begin after it is
    /// not made: the call fails with the last error at once, without waiting out the backoff.
    /// An attempt under way when it passes is not stopped (that is `attempt_timeout`'s job).
    pub retry_timeout: Option<Duration>,
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
            retry_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts with exponential backoff from 100 ms, capped at 60 s.
    pub fn attempts(max_attempts: u32) -> Self {
        Self { max_attempts: max_attempts.max(1), ..Self::default() }
    }

    /// The same policy with a first backoff of `initial` (doubling from there, as before).
    pub fn backoff_from(mut self, initial: Duration) -> Self {
        self.initial_backoff = initial;
        self
    }

    /// The same policy giving up once `timeout` has passed since the call was issued; see
    /// [`retry_timeout`](Self::retry_timeout).
    pub fn retry_timeout(mut self, timeout: Duration) -> Self {
        self.retry_timeout = Some(timeout);
        self
    }

    /// When, after `failed` failed attempts, the last of them failing at `now_ms`, the next
    /// attempt may begin (milliseconds, the runtime's clock); `None` when none is left: the
    /// attempts are used up, or the retry timeout counted from `issued_ms` passes before the
    /// backoff ends.
    pub(crate) fn next_attempt_at(&self, failed: u32, issued_ms: u64, now_ms: u64) -> Option<u64> {
        if failed >= self.max_attempts {
            return None;
        }
        let at = now_ms.saturating_add(crate::clock::ms(self.backoff(failed)));
        match self.retry_timeout {
            Some(limit) if at > issued_ms.saturating_add(crate::clock::ms(limit)) => None,
            _ => Some(at),
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
    /// The activity's result (on the last attempt) could not be stored: too large, or it would
    /// not decode again.
    Rejected(String),
}

impl<E: fmt::Display> fmt::Display for ActivityError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivityError::Failed(e) => write!(f, "{e}"),
            ActivityError::Panicked(m) => write!(f, "activity panicked: {m}"),
            ActivityError::TimedOut(d) => write!(f, "activity timed out after {d:?}"),
            ActivityError::NotRegistered(n) => write!(f, "activity `{n}` is not registered"),
            ActivityError::Rejected(m) => write!(f, "activity result refused: {m}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for ActivityError<E> {}

impl<E> ActivityError<E> {
    /// The activity's own error, when it returned one; otherwise the whole error back (it
    /// panicked, timed out or is not registered).
    ///
    /// ```
    /// use durable_runtime::ActivityError;
    ///
    /// let e: ActivityError<u32> = ActivityError::Failed(7);
    /// assert_eq!(e.into_failed().ok(), Some(7));
    /// let e: ActivityError<u32> = ActivityError::Panicked("boom".into());
    /// assert!(e.into_failed().is_err());
    /// ```
    pub fn into_failed(self) -> Result<E, Self> {
        match self {
            ActivityError::Failed(e) => Ok(e),
            other => Err(other),
        }
    }

    /// The activity's own error, when it returned one.
    pub fn failed(&self) -> Option<&E> {
        match self {
            ActivityError::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// `?` on an activity call in an orchestration that returns `Result<T, String>`: the error's
/// message.
///
/// An orchestration with an error type of its own converts with a `From` impl in its crate,
/// which the orphan rules allow because the error type is local:
///
/// ```
/// use durable_runtime::ActivityError;
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// enum OrderError {
///     Payment(String),
///     Other(String),
/// }
///
/// impl From<ActivityError<String>> for OrderError {
///     fn from(e: ActivityError<String>) -> Self {
///         match e.into_failed() {
///             Ok(refused) => OrderError::Payment(refused),
///             Err(other) => OrderError::Other(other.to_string()),
///         }
///     }
/// }
///
/// let e: OrderError = ActivityError::Failed("card declined".to_string()).into();
/// assert!(matches!(e, OrderError::Payment(m) if m == "card declined"));
/// let s: String = ActivityError::<String>::TimedOut(std::time::Duration::from_secs(1)).into();
/// assert_eq!(s, "activity timed out after 1s");
/// ```
impl<E: fmt::Display> From<ActivityError<E>> for String {
    fn from(e: ActivityError<E>) -> Self {
        e.to_string()
    }
}
