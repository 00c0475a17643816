//! What a step's result does to an instance record: pure functions, no I/O.

use crate::branches::new_branches;
use crate::error::panic_message;
use crate::ids::step_key;
use crate::op::Command;
use crate::orchestration::{Fault, StepResult};
use crate::record::{InstanceRecord, Pending, State};
use crate::records::EventRef;
use crate::status::StepOutcome;

/// Removes the events `taken` from the record's own inbox.
pub(crate) fn take_events(rec: &mut InstanceRecord, taken: &[EventRef]) {
    rec.inbox.retain(|e| !taken.contains(&EventRef::Record(e.seq)));
}

/// The seqs of the store inbox messages among `taken`.
pub(crate) fn consumed(taken: &[EventRef]) -> Vec<u64> {
    taken
        .iter()
        .filter_map(|t| match t {
            EventRef::Inbox(seq) => Some(*seq),
            EventRef::Record(_) => None,
        })
        .collect()
}

/// Applies a step's result to the record it ran on; the events it took are gone from the
/// record's own inbox (those in the store's inbox are consumed by the checkpoint's write).
pub(crate) fn apply_step(
    id: &str,
    rec: &mut InstanceRecord,
    now: u64,
    result: std::thread::Result<StepResult>,
    status: Option<Vec<u8>>,
    taken: &[EventRef],
) -> StepOutcome {
    rec.updated_ms = now;
    take_events(rec, taken);
    if let Some(s) = status {
        rec.custom_status = Some(s);
    }
    if matches!(rec.state, State::Incompatible { .. }) {
        rec.state = State::Running;
    }
    match result {
        Ok(StepResult::Suspend { command: Command::ContinueAsNew { input }, .. }) => {
            rec.steps += 1;
            rec.input = input;
            rec.frame = None;
            rec.pending = None;
            StepOutcome::ContinuedAsNew
        }
        Ok(StepResult::Suspend { frame, command, .. }) => {
            rec.steps += 1;
            // The frame holds what the body still needs of its input: the input itself is
            // needed no more, and would be written again at every checkpoint.
            rec.input = Vec::new();
            let key = step_key(id, rec.steps);
            let branches = new_branches(&command, &key);
            let next = command.describe();
            rec.pending = Some(Pending { command, key, branches, issued_ms: now });
            rec.frame = Some(frame);
            StepOutcome::Suspended(next)
        }
        Ok(StepResult::Complete(output)) => {
            rec.steps += 1;
            rec.state = State::Completed { output };
            rec.frame = None;
            rec.pending = None;
            StepOutcome::Completed
        }
        Ok(StepResult::Fail { message, payload }) => {
            rec.steps += 1;
            rec.state = State::Failed { message: message.clone(), payload: Some(payload) };
            rec.frame = None;
            rec.pending = None;
            StepOutcome::Failed(message)
        }
        Ok(StepResult::Fault(Fault::Incompatible(m))) => {
            let message = format!("instance `{id}` of orchestration `{}`: {m}", rec.orchestration);
            tracing::warn!("{message}");
            rec.state = State::Incompatible { message: message.clone() };
            StepOutcome::Incompatible(message)
        }
        Ok(StepResult::Fault(f)) => {
            let message = format!("instance `{id}` of orchestration `{}`: {f}", rec.orchestration);
            tracing::error!("{message}");
            rec.state = State::Failed { message: message.clone(), payload: None };
            StepOutcome::Failed(message)
        }
        Err(panic) => {
            let message = format!(
                "instance `{id}`: orchestration `{}` panicked: {}",
                rec.orchestration,
                panic_message(panic.as_ref())
            );
            tracing::error!("{message}");
            rec.state = State::Failed { message: message.clone(), payload: None };
            StepOutcome::Failed(message)
        }
    }
}

/// Fails an instance whose step produced a checkpoint that cannot be stored.
pub(crate) fn fail_step(id: &str, rec: &mut InstanceRecord, now: u64, why: &str) -> StepOutcome {
    let message = format!("instance `{id}` of orchestration `{}`: {why}", rec.orchestration);
    tracing::error!("{message}");
    rec.steps += 1;
    rec.updated_ms = now;
    rec.state = State::Failed { message: message.clone(), payload: None };
    rec.frame = None;
    rec.pending = None;
    StepOutcome::Failed(message)
}
