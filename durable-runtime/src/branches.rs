//! Join and race bookkeeping, in one place: the branches a command starts with, which of them
//! are done ([`resolve`]), the completion they make together ([`combine`]) and its inverse
//! ([`keep`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::dispatch::retryable;
use crate::engine::Engine;
use crate::error::ClientError;
use crate::ids::{branch_key, derived_id, shown_id, validate_id};
use crate::op::{ActivityFailure, ChildFailure, Command, Completion, SendError};
use crate::record::{Branch, Pending, State};
use crate::records::{EventRef, Instance, completion_size};
use crate::status::InstanceState;

/// How long a send waits before it tries again after the store failed.
const SEND_RETRY_MS: u64 = 1_000;

/// Delivers an event an orchestration sends, once under `key`, and wakes the receiver; the
/// operation's result, or `None` when the store failed and it must be tried again.
async fn send(
    engine: &Arc<Engine>,
    to: &str,
    key: &str,
    name: &str,
    payload: &[u8],
) -> Option<Result<(), SendError>> {
    if payload.len() > engine.max_payload {
        return Some(Err(SendError::Refused {
            id: to.to_owned(),
            reason: format!(
                "the payload of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                engine.max_payload
            ),
        }));
    }
    let result = match engine.records.send(to, key, name, payload.to_vec()).await {
        Ok(()) => {
            engine.wake(to);
            Ok(())
        }
        Err(ClientError::NotFound(id)) => Err(SendError::NotFound(id)),
        Err(ClientError::Finished { id, state }) => {
            let state = match state {
                InstanceState::Completed => "completed".to_owned(),
                InstanceState::Failed { message } => format!("failed: {message}"),
                InstanceState::Cancelled { reason } => format!("cancelled: {reason}"),
                other => format!("{other:?}"),
            };
            Err(SendError::Finished { id, state })
        }
        Err(ClientError::Store(e)) => {
            tracing::warn!("cannot send event `{name}` to `{}` now: {e}", shown_id(to));
            return None;
        }
        Err(e) => Err(SendError::Refused { id: to.to_owned(), reason: e.to_string() }),
    };
    Some(result)
}

/// What [`resolve`] found.
pub(crate) struct Progress {
    /// The command's completion, when its branches make one.
    pub completion: Option<Completion>,
    /// The branches, with what was found done.
    pub branches: Vec<Branch>,
    /// Events the branches took.
    pub taken: Vec<EventRef>,
    /// Whether any branch changed.
    pub changed: bool,
}

/// Whether an instance parked at `pending` waits for the result of its sub-orchestration
/// `child`: a branch names it and has not taken its result yet.
pub(crate) fn waits_for(pending: &Pending, child: &str) -> bool {
    pending.command.leaves().iter().zip(&pending.branches).enumerate().any(|(i, (leaf, branch))| {
        let Command::Child { id: chosen, .. } = leaf else { return false };
        let current = match (&branch.child_id, chosen) {
            (Some(attempt), _) | (None, Some(attempt)) => attempt.clone(),
            (None, None) => child_id(&pending.key, i),
        };
        branch.done.is_none() && current == child
    })
}

/// The id of the sub-orchestration operation `index` of step `key` starts (unless it chose one).
fn child_id(key: &str, index: usize) -> String {
    derived_id(&branch_key(key, index))
}

/// The id of attempt `attempt` (from 2) of the sub-orchestration whose first attempt runs
/// under `first`: `first#attempt`.
fn attempt_id(first: &str, attempt: u32) -> String {
    format!("{first}#{attempt}")
}

/// The branches of a command just issued at step `key`, one per operation, each child's id
/// fixed now (and stored with them).
pub(crate) fn new_branches(command: &Command, key: &str) -> Vec<Branch> {
    command
        .leaves()
        .iter()
        .enumerate()
        .map(|(i, leaf)| Branch {
            child_id: match leaf {
                Command::Child { id: Some(chosen), .. } => Some(chosen.clone()),
                Command::Child { .. } => Some(child_id(key, i)),
                _ => None,
            },
            ..Branch::default()
        })
        .collect()
}

/// The completion of `command` its branches make: every branch of a join, the first done branch
/// of a race, the only branch otherwise; `None` while it is not complete.
pub(crate) fn combine(command: &Command, branches: &[Branch]) -> Option<Completion> {
    match command {
        Command::Join(_) => branches
            .iter()
            .all(|b| b.done.is_some())
            .then(|| Completion::Join(branches.iter().filter_map(|b| b.done.clone()).collect())),
        Command::Race(_) => branches.iter().enumerate().find_map(|(i, b)| {
            b.done.clone().map(|c| Completion::Race {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                completion: Box::new(c),
            })
        }),
        _ => branches.first().and_then(|b| b.done.clone()),
    }
}

/// The inverse of [`combine`]: stores `completion` back into the branches of `pending`, so that a
/// step this build refused resumes with it under a compatible build instead of running the
/// operations again.
pub(crate) fn keep(pending: &mut Pending, completion: &Completion) {
    match completion {
        Completion::Join(all) => {
            for (b, c) in pending.branches.iter_mut().zip(all) {
                b.done = Some(c.clone());
            }
        }
        Completion::Race { index, completion } => {
            let i = usize::try_from(*index).unwrap_or(usize::MAX);
            if let Some(b) = pending.branches.get_mut(i) {
                b.done = Some((**completion).clone());
            }
        }
        other => {
            if let Some(b) = pending.branches.first_mut() {
                b.done = Some(other.clone());
            }
        }
    }
}

/// Works out which branches of `pending` are done now.
pub(crate) async fn resolve(
    engine: &Arc<Engine>,
    id: &str,
    instance: &Instance,
    pending: &Pending,
    finished: &mut HashMap<usize, Result<Vec<u8>, ActivityFailure>>,
) -> Progress {
    let now = engine.clock.now_ms();
    let mut branches = pending.branches.clone();
    let mut taken = Vec::new();
    let mut changed = false;
    let mut inbox: Vec<_> = instance.events.clone();
    // Room for the results of activities: what the record has left, less the results of
    // this command's branches already stored.
    let mut room = engine
        .records
        .step_budget(instance)
        .saturating_sub(branches.iter().filter_map(|b| b.done.as_ref()).map(completion_size).sum());
    for (i, leaf) in pending.command.leaves().iter().enumerate() {
        let Some(branch) = branches.get_mut(i) else { continue };
        if branch.done.is_some() {
            continue;
        }
        match leaf {
            Command::Timer { fire_at_ms } if *fire_at_ms <= now => {
                branch.done = Some(Completion::Timer);
                changed = true;
            }
            Command::Event { name, timeout_at_ms } => {
                if let Some(pos) = inbox.iter().position(|e| &e.name == name) {
                    let ev = inbox.remove(pos);
                    taken.push(ev.at);
                    branch.done =
                        Some(Completion::Event { name: name.clone(), payload: Some(ev.payload) });
                    changed = true;
                } else if timeout_at_ms.is_some_and(|t| t <= now) {
                    branch.done = Some(Completion::Event { name: name.clone(), payload: None });
                    changed = true;
                }
            }
            Command::Child { orchestration, input, id: chosen, policy } => {
                let first = chosen.clone().unwrap_or_else(|| child_id(&pending.key, i));
                let child_id = branch.child_id.clone().unwrap_or_else(|| first.clone());
                if !branch.child_started
                    && let Some(reason) = chosen.as_deref().and_then(|c| validate_id(c).err())
                {
                    branch.done = Some(Completion::Child(Err(ChildFailure::NotStarted(format!(
                        "invalid instance id `{}`: {reason}",
                        shown_id(&child_id)
                    )))));
                    branch.child_started = true;
                    changed = true;
                    continue;
                }
                if !branch.child_started {
                    if branch.not_before_ms > now {
                        // A retry waiting out its backoff.
                        continue;
                    }
                    match engine
                        .start_encoded(
                            orchestration,
                            None,
                            &child_id,
                            input.clone(),
                            Some(id.to_owned()),
                            |_| {},
                        )
                        .await
                    {
                        Ok(_) => {}
                        Err(e) => {
                            branch.done = Some(Completion::Child(Err(ChildFailure::NotStarted(
                                e.to_string(),
                            ))))
                        }
                    }
                    branch.child_started = true;
                    changed = true;
                }
                if branch.done.is_none() {
                    // One read of the child: gone, finished, or still running.
                    match engine.records.record(&child_id) {
                        Ok(None) if branch.child_started => {
                            // Deleted before this instance took its result (purge refuses
                            // that; a hand in the store does not). It may have run to its end:
                            // not started again, which could run its effects twice.
                            branch.done = Some(Completion::Child(Err(ChildFailure::Failed {
                                message: format!(
                                    "sub-orchestration `{}` is gone: its record was deleted \
                                     before this instance took its result",
                                    shown_id(&child_id)
                                ),
                                payload: None,
                            })));
                            changed = true;
                        }
                        Ok(Some((child, _))) => {
                            let result = match child.state {
                                State::Completed { output } => Some(Ok(output)),
                                State::Failed { message, payload } => {
                                    Some(Err(ChildFailure::Failed { message, payload }))
                                }
                                State::Cancelled { reason } => {
                                    Some(Err(ChildFailure::Cancelled(reason)))
                                }
                                State::Running | State::Incompatible { .. } => None,
                            };
                            if let Some(result) = result {
                                // A child that failed is started again while the policy
                                // allows, under the id of its next attempt; a cancelled one
                                // is not.
                                let failed = branch.failed_attempts + 1;
                                let retry_at = match &result {
                                    Err(ChildFailure::Failed { .. }) => {
                                        policy.next_attempt_at(failed, pending.issued_ms, now)
                                    }
                                    _ => None,
                                };
                                match (result, retry_at) {
                                    (Err(ChildFailure::Failed { message, .. }), Some(at)) => {
                                        tracing::info!(
                                            attempt = failed,
                                            "sub-orchestration `{}` failed, will start it again: {message}",
                                            shown_id(&child_id)
                                        );
                                        branch.failed_attempts = failed;
                                        branch.child_id = Some(attempt_id(&first, failed + 1));
                                        branch.child_started = false;
                                        branch.not_before_ms = at;
                                    }
                                    (result, _) => branch.done = Some(Completion::Child(result)),
                                }
                                changed = true;
                            }
                        }
                        _ => {}
                    }
                }
            }
            Command::Activity { name, policy, .. } => {
                if let Some(mut result) = finished.remove(&i) {
                    if result.is_err() {
                        metrics::counter!("durable_activity_failures_total", "activity" => name.clone())
                            .increment(1);
                    }
                    if let Ok(bytes) = &result {
                        if bytes.len() > room {
                            result = Err(ActivityFailure::Rejected(format!(
                                "its result of {} bytes does not fit in the instance's record \
                                 ({room} bytes left of the limit of {} bytes)",
                                bytes.len(),
                                engine.records.max_record
                            )));
                        } else {
                            room -= bytes.len();
                        }
                    }
                    let attempt = branch.failed_attempts + 1;
                    // The activity's predicate is code, not stored: asked here, in the process
                    // that ran the attempt (so has the activity registered), as each attempt
                    // fails. Only its answer is stored (the attempt count, or the result).
                    let retry_at = match &result {
                        Err(f)
                            if retryable(f)
                                && engine
                                    .registered
                                    .activity(name)
                                    .is_none_or(|(_, a)| a.should_retry(f)) =>
                        {
                            policy.next_attempt_at(attempt, pending.issued_ms, now)
                        }
                        _ => None,
                    };
                    match (result, retry_at) {
                        (Err(f), Some(at)) => {
                            tracing::info!(attempt, "activity attempt failed, will retry: {f:?}");
                            branch.failed_attempts = attempt;
                            branch.not_before_ms = at;
                        }
                        (result, _) => branch.done = Some(Completion::Activity(result)),
                    }
                    changed = true;
                }
            }
            Command::SendEvent { instance: to, name, payload } if branch.not_before_ms <= now => {
                // Keyed by the operation and by this incarnation of the sender (one purged and
                // started again under its id is another sender).
                let key = format!("{}@{}", branch_key(&pending.key, i), instance.rec.created_ms);
                match send(engine, to, &key, name, payload).await {
                    Some(result) => branch.done = Some(Completion::SendEvent(result)),
                    // The store failed: the event may or may not be stored. Try again a little
                    // later, under the same key, so it is delivered once either way.
                    None => branch.not_before_ms = now.saturating_add(SEND_RETRY_MS),
                }
                changed = true;
            }
            _ => {}
        }
    }
    let completion = combine(&pending.command, &branches);
    Progress { completion, branches, taken, changed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::RetryPolicy;

    fn timer() -> Command {
        Command::Timer { fire_at_ms: 1 }
    }

    fn child() -> Command {
        Command::Child {
            orchestration: "k".into(),
            input: vec![],
            id: None,
            policy: RetryPolicy::default(),
        }
    }

    #[test]
    fn combine_and_keep_are_inverses() {
        let call =
            Command::Activity { name: "a".into(), input: vec![], policy: RetryPolicy::attempts(1) };
        for command in [
            Command::Join(vec![timer(), call.clone()]),
            Command::Race(vec![timer(), call.clone()]),
            call.clone(),
        ] {
            let mut pending = Pending {
                issued_ms: 0,
                key: "i:1".into(),
                branches: new_branches(&command, "i:1"),
                command: command.clone(),
            };
            assert_eq!(combine(&command, &pending.branches), None, "{command:?}");
            let n = pending.branches.len();
            pending.branches[n - 1].done = Some(Completion::Activity(Ok(vec![7])));
            let partial = combine(&command, &pending.branches);
            assert_eq!(partial.is_some(), !matches!(command, Command::Join(_)), "{command:?}");
            pending.branches[0].done = Some(Completion::Timer);
            let whole = combine(&command, &pending.branches).unwrap();
            let mut fresh = Pending { branches: new_branches(&command, "i:1"), ..pending.clone() };
            keep(&mut fresh, &whole);
            assert_eq!(combine(&command, &fresh.branches), Some(whole), "{command:?}");
        }
    }

    #[test]
    fn children_are_named_by_the_branch_rule() {
        let ids = |c: &Command| -> Vec<Option<String>> {
            new_branches(c, "p:2").into_iter().map(|b| b.child_id).collect()
        };
        assert_eq!(ids(&child()), [Some("~p:2".to_owned())]);
        assert_eq!(
            ids(&Command::Join(vec![child(), timer(), child()])),
            [Some("~p:2".to_owned()), None, Some("~p:2.2".to_owned())]
        );
        let chosen = Command::Child {
            orchestration: "k".into(),
            input: vec![],
            id: Some("c".into()),
            policy: RetryPolicy::default(),
        };
        assert_eq!(ids(&Command::Race(vec![timer(), chosen])), [None, Some("c".to_owned())]);
    }
}
