//! Support for the code `#[orchestration]` and `#[activity]` generate. Not a public API: it may
//! change in any release, together with the macros.

pub use serde;

pub use crate::Persistable;
pub use crate::activity::{Activity, ActivityContext, ActivityRegistry};
pub use crate::op::{DurableOp, Failure};
pub use crate::orchestration::{
    Ctx, Fault, Orchestration, OrchestrationOutput, PointInfo, Resume, StepResult,
};
pub use crate::record::Frame;

use std::marker::PhantomData;

use crate::codec;
use crate::op::Completion;

/// Where the state machine goes after a block.
#[must_use]
pub enum Step<R> {
    /// The orchestration returned.
    Done(R),
    /// Suspended or faulted: hand this to the runtime.
    Exit(StepResult),
}

/// Converts the machine's exit into the runtime's step result.
pub fn finish<R: OrchestrationOutput>(step: Step<R>) -> StepResult {
    match step {
        Step::Exit(r) => r,
        Step::Done(out) => match out.into_result() {
            Ok(v) => match codec::encode(&v) {
                Ok(b) => StepResult::Complete(b),
                Err(e) => StepResult::Fault(Fault::Codec(format!("output: {e}"))),
            },
            Err(e) => match codec::encode(&e) {
                Ok(b) => StepResult::Fail {
                    message: e.to_string(),
                    payload: b,
                },
                Err(ce) => StepResult::Fault(Fault::Codec(format!("error value: {ce}"))),
            },
        },
    }
}

/// Ties a suspension point to the type of the operation it awaits; stores nothing.
pub struct Marker<O>(PhantomData<fn() -> O>);

impl<O: DurableOp> Marker<O> {
    /// The marker of `op`'s type.
    pub fn of(_op: &O) -> Self {
        Marker(PhantomData)
    }

    /// The marker when decoding a frame.
    pub fn new() -> Self {
        Marker(PhantomData)
    }

    /// Takes the completion handed to this step and turns it into the operation's output.
    pub fn complete(self, completion: &mut Option<Completion>) -> Result<O::Output, Fault> {
        let c = completion
            .take()
            .ok_or_else(|| Fault::Corrupt("resumed without a completion".into()))?;
        O::complete(c).map_err(|e| Fault::Corrupt(e.0))
    }
}

impl<O: DurableOp> Default for Marker<O> {
    fn default() -> Self {
        Self::new()
    }
}

/// Asserts at the user's binding that a local kept across an `.await` can be stored.
#[inline(always)]
pub fn assert_persistable<T: Persistable>(_: &T) {}

/// The type name recorded in a layout.
pub fn type_name<T: ?Sized>() -> &'static str {
    std::any::type_name::<T>()
}

/// FNV-1a over the identity and the layout: stable across builds and platforms.
pub fn fingerprint(identity: &str, layout: &[(&str, &str)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(identity.as_bytes());
    for (name, ty) in layout {
        eat(name.as_bytes());
        eat(ty.as_bytes());
    }
    h
}

/// Checks once per process and point that every stored local round-trips through the codec,
/// naming the first that does not.
pub fn check_round_trip<T: Persistable>(value: &T, local: &str, point: &str) -> Result<(), Fault> {
    codec::encode_checked(value).map(drop).map_err(|e| {
        Fault::Codec(format!(
            "local `{local}` stored at suspension point `{point}`: {e}"
        ))
    })
}

/// Builds the frame of a suspension point.
pub fn frame<L: serde::Serialize>(
    identity: &'static str,
    line: u32,
    layout: &[(&'static str, &'static str)],
    locals: &L,
) -> Result<Frame, Fault> {
    let bytes = codec::encode(locals)
        .map_err(|e| Fault::Codec(format!("locals at suspension point `{identity}`: {e}")))?;
    Ok(Frame {
        point: identity.to_owned(),
        line,
        fingerprint: fingerprint(identity, layout),
        layout: layout
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect(),
        locals: bytes,
    })
}

/// Decodes a frame's locals after checking its fingerprint against this build's layout.
pub fn open_frame<L: serde::de::DeserializeOwned>(
    frame: &Frame,
    line: u32,
    layout: &[(&'static str, &'static str)],
) -> Result<L, Fault> {
    if fingerprint(&frame.point, layout) != frame.fingerprint {
        return Err(Fault::Incompatible(describe_layout_change(
            frame, line, layout,
        )));
    }
    codec::decode(&frame.locals).map_err(|e| {
        Fault::Corrupt(format!(
            "locals at suspension point `{}` (line {}): {e}",
            frame.point, frame.line
        ))
    })
}

fn describe_layout_change(
    frame: &Frame,
    line: u32,
    layout: &[(&'static str, &'static str)],
) -> String {
    let mut diffs = Vec::new();
    for (name, ty) in &frame.layout {
        match layout.iter().find(|(n, _)| n == name) {
            None => diffs.push(format!("`{name}: {ty}` is no longer stored")),
            Some((_, t)) if t != ty => {
                diffs.push(format!("`{name}` changed type from `{ty}` to `{t}`"))
            }
            Some(_) => {}
        }
    }
    for (name, ty) in layout {
        if !frame.layout.iter().any(|(n, _)| n == name) {
            diffs.push(format!("`{name}: {ty}` is now stored"));
        }
    }
    if diffs.is_empty() {
        diffs.push("the stored locals were reordered".into());
    }
    format!(
        "suspension point `{}` (saved at line {}, now line {line}) changed its stored locals: {}",
        frame.point,
        frame.line,
        diffs.join("; ")
    )
}

/// A frame names a suspension point this build does not have.
pub fn unknown_point(frame: &Frame) -> Fault {
    Fault::Incompatible(format!(
        "suspension point `{}` (saved at line {}) does not exist in this build",
        frame.point, frame.line
    ))
}

/// Decodes the orchestration's input.
pub fn decode_input<T: Persistable>(bytes: &[u8]) -> Result<T, Fault> {
    codec::decode(bytes).map_err(|e| Fault::Corrupt(format!("input: {e}")))
}

/// Parks at a suspension point: the frame plus the command of `op`.
pub fn suspend<O: DurableOp, R>(frame: Result<Frame, Fault>, op: O) -> Step<R> {
    let frame = match frame {
        Ok(f) => f,
        Err(e) => return Step::Exit(StepResult::Fault(e)),
    };
    match op.into_command() {
        Ok(command) => Step::Exit(StepResult::Suspend { frame, command }),
        Err(e) => Step::Exit(StepResult::Fault(Fault::Codec(format!(
            "command input at `{}`: {e}",
            frame.point
        )))),
    }
}

/// A step that cannot go on.
pub fn fault<R>(fault: Fault) -> Step<R> {
    Step::Exit(StepResult::Fault(fault))
}
