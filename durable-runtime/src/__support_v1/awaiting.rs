//! What a machine's `.await` awaits: a durable operation, which parks the machine with one
//! command, or a call of a `#[durable_fn]`, a machine of its own whose frame lives inside the
//! caller's frame.
//!
//! Generated code keeps the awaited value in a [`Slot`] in the caller's state and polls it when
//! the block after the `.await` runs: a slot is ready (the value goes on), or parks (the caller
//! writes its frame, the slot's own part included, and suspends with the slot's command).
//!
//! Over 400 lines: the slot, the awaitables it holds (durable operations and nested durable
//! functions), parking, and the step graph's points share one protocol with the generated code.

use std::any::Any;
use std::cell::RefCell;

use super::{FrameReader, FrameWriter, Step};
use crate::graph::{GraphLocal, GraphPoint, RenderedFrame, StepGraph};
use crate::op::{Command, Completion, DurableOp};
use crate::orchestration::{Ctx, Fault, LiveState, Registry, Resume, StepResult};
use crate::record::Frame;

/// Something an orchestration or a durable function can `.await`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a durable operation",
    label = "an orchestration can only `.await` durable operations and `#[durable_fn]` calls",
    note = "do side effects in an `#[activity]` and call it with `ctx.call(activity, input)`; \
            wait with `ctx.sleep(..)`; wait for a signal with `ctx.wait_event(..)`; reuse durable \
            code with a `#[durable_fn]`"
)]
pub trait Awaitable: Sized + Send + 'static {
    /// The value the `.await` produces.
    type Output;
    /// What the caller keeps while parked on it.
    type Waiting: Send + 'static;
    /// First poll, right after the `.await`'s operand was evaluated.
    fn begin(self, ctx: &Ctx) -> Polled<Self::Waiting, Self::Output>;
    /// A later poll, with the completion of the command the last park issued.
    fn resume(
        waiting: Self::Waiting,
        ctx: &Ctx,
        completion: &mut Option<Completion>,
    ) -> Polled<Self::Waiting, Self::Output>;
    /// Writes what the caller's frame keeps of `waiting`, after the caller's locals.
    fn store(waiting: &Self::Waiting, writer: &mut FrameWriter);
    /// Reads back what `store` wrote, after a restart.
    fn restore(reader: &mut FrameReader<'_>) -> Result<Self::Waiting, Fault>;
    /// Registers what this awaitable needs registered before a restarted process resumes it.
    fn register(_registry: &mut Registry) {}
    /// Decodes what `store` wrote for people: a durable function's name and frame.
    fn render(
        _reader: &mut FrameReader<'_>,
    ) -> Result<Option<(String, Box<RenderedFrame>)>, Fault> {
        Ok(None)
    }
}

/// The outcome of a poll.
pub enum Polled<W, T> {
    /// The `.await` produced its value.
    Ready(T),
    /// Park the caller with this command, keeping `W`.
    Park(W, Command),
    /// The step cannot go on.
    Fault(Fault),
}

// `do_not_recommend`: a type that is not awaitable is reported as such, not as a type that
// does not implement `DurableOp`.
#[diagnostic::do_not_recommend]
impl<O: DurableOp + Send + 'static> Awaitable for O {
    type Output = O::Output;
    type Waiting = super::Marker<O>;

    fn begin(self, _ctx: &Ctx) -> Polled<Self::Waiting, O::Output> {
        match self.into_command() {
            Ok(command) => Polled::Park(super::Marker::new(), command),
            Err(e) => Polled::Fault(Fault::Codec(format!("command input: {e}"))),
        }
    }

    fn resume(
        waiting: Self::Waiting,
        _ctx: &Ctx,
        completion: &mut Option<Completion>,
    ) -> Polled<Self::Waiting, O::Output> {
        match waiting.complete(completion) {
            Ok(v) => Polled::Ready(v),
            Err(f) => Polled::Fault(f),
        }
    }

    fn store(_: &Self::Waiting, _: &mut FrameWriter) {}

    fn restore(_: &mut FrameReader<'_>) -> Result<Self::Waiting, Fault> {
        Ok(super::Marker::new())
    }
}

/// Where a machine's `.await` stands: the operand not yet polled, or parked on it (what it
/// keeps is boxed, so that the state type needs no bound on the operand's type: a type that is
/// not awaitable is then reported once, at the `.await`).
pub enum Slot<A> {
    /// Evaluated, not yet polled.
    Fresh(A),
    /// Parked: the operand's `Awaitable::Waiting`.
    Waiting(Box<dyn Any + Send>),
}

impl<A: Awaitable> Slot<A> {
    /// The operand of an `.await`, just evaluated.
    pub fn fresh(awaited: A) -> Self {
        Slot::Fresh(awaited)
    }

    /// Rebuilds a parked slot from the caller's frame.
    pub fn restore(reader: &mut FrameReader<'_>) -> Result<Self, Fault> {
        A::restore(reader).map(|w| Slot::Waiting(Box::new(w)))
    }

    /// Polls: begins a fresh operand, or hands the completion to a parked one. `point` names
    /// the suspension point in messages.
    pub fn poll(
        self,
        ctx: &Ctx,
        completion: &mut Option<Completion>,
        point: &'static str,
    ) -> Polled<Self, A::Output> {
        let polled = match self {
            Slot::Fresh(a) => a.begin(ctx),
            Slot::Waiting(w) => match w.downcast::<A::Waiting>() {
                Ok(w) => A::resume(*w, ctx, completion),
                Err(_) => Polled::Fault(Fault::Corrupt(format!(
                    "suspension point `{point}` was parked on another operation"
                ))),
            },
        };
        match polled {
            Polled::Ready(v) => Polled::Ready(v),
            Polled::Park(w, command) => Polled::Park(Slot::Waiting(Box::new(w)), command),
            Polled::Fault(Fault::Codec(m)) => {
                Polled::Fault(Fault::Codec(format!("at suspension point `{point}`: {m}")))
            }
            Polled::Fault(f) => Polled::Fault(f),
        }
    }

    /// Writes a parked slot's part of the caller's frame.
    pub fn store(&self, writer: &mut FrameWriter) {
        if let Slot::Waiting(w) = self
            && let Some(w) = w.downcast_ref::<A::Waiting>()
        {
            A::store(w, writer);
        }
    }

    /// Decodes the slot's part of a frame for people (see [`Awaitable::render`]).
    pub fn render(
        _: &std::marker::PhantomData<Self>,
        reader: &mut FrameReader<'_>,
    ) -> Result<Option<(String, Box<RenderedFrame>)>, Fault> {
        A::render(reader)
    }

    /// Registers what the awaited type needs (the static type of this slot).
    pub fn register(_: &std::marker::PhantomData<Self>, registry: &mut Registry) {
        A::register(registry);
    }
}

/// Parks the machine at a suspension point: its frame, the command, and its state for the next
/// step if it runs in this process.
pub fn park<R, S: super::Resident>(
    frame: Result<Frame, Fault>,
    command: Command,
    state: S,
) -> Step<R> {
    match frame {
        Ok(frame) => Step::Exit(Box::new(StepResult::Suspend {
            frame,
            command,
            live: Some(LiveState::new(state)),
        })),
        Err(e) => Step::Exit(Box::new(StepResult::Fault(e))),
    }
}

/// How a machine is entered.
pub enum Entry<'a, A> {
    /// The first step, with the input (encoded for an orchestration, the arguments for a
    /// durable function).
    Start(A),
    /// A later step.
    Later(Resume<'a>),
    /// Not a step: register what the machine's `.await`s need, and return.
    Register(&'a mut Registry),
    /// Not a step: list each point's stored locals with their types.
    Describe(&'a mut Vec<(&'static str, Vec<(&'static str, &'static str)>)>),
    /// Not a step: decode a frame's locals with their types, as JSON.
    Render(&'a Frame, &'a mut Option<RenderedFrame>),
}

impl<'a> Entry<'a, &'a [u8]> {
    /// An orchestration's resume as an entry.
    pub fn of(resume: Resume<'a>) -> Self {
        match resume {
            Resume::Start(bytes) => Entry::Start(bytes),
            later => Entry::Later(later),
        }
    }
}

/// A context for a machine in register mode, which runs no step.
pub fn detached_ctx() -> Ctx {
    Ctx::detached()
}

/// What a machine returns after a mode that runs no step (register, describe, render).
pub fn registered<R>() -> Step<R> {
    Step::Exit(Box::new(StepResult::Complete(Vec::new())))
}

/// A value as JSON, for people (a value serde_json cannot show becomes its error message).
pub fn to_json<T: super::Persistable>(value: &T) -> serde_json::Value {
    serde_json::to_value(value)
        .unwrap_or_else(|e| serde_json::Value::String(format!("<cannot show: {e}>")))
}

/// The outcome of a machine run in render mode.
pub fn rendered<R>(step: Step<R>, out: Option<RenderedFrame>) -> Result<RenderedFrame, Fault> {
    match (out, step) {
        (Some(r), _) => Ok(r),
        (None, Step::Exit(r)) => match *r {
            StepResult::Fault(f) => Err(f),
            _ => Err(Fault::Corrupt("the frame was not rendered".into())),
        },
        (None, Step::Done(_)) => Err(Fault::Corrupt("the frame was not rendered".into())),
    }
}

/// A point of an orchestration as the macro writes it down, for [`graph`].
pub struct StaticPoint {
    /// Its identity.
    pub identity: &'static str,
    /// Source file and line of its `.await`.
    pub file: &'static str,
    /// See `file`.
    pub line: u32,
    /// The awaited operation.
    pub operation: &'static str,
}

/// Assembles an orchestration's step graph from what the macro wrote down and the layouts its
/// machine listed in describe mode.
pub fn graph(
    name: &str,
    version: u32,
    points: &[StaticPoint],
    layouts: &[(&'static str, Vec<(&'static str, &'static str)>)],
    edges: &[(&str, &str)],
) -> StepGraph {
    let points = points
        .iter()
        .map(|p| GraphPoint {
            identity: p.identity.to_owned(),
            file: p.file.to_owned(),
            line: p.line,
            operation: p.operation.to_owned(),
            locals: layouts
                .iter()
                .find(|(id, _)| *id == p.identity)
                .map(|(_, l)| {
                    l.iter()
                        .map(|(n, t)| GraphLocal { name: (*n).to_owned(), ty: (*t).to_owned() })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    StepGraph {
        name: name.to_owned(),
        version,
        points,
        edges: edges.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect(),
    }
}

/// A `#[durable_fn]`, as its attribute implements it: a machine entered with its arguments.
pub trait DurableFn: 'static {
    /// The arguments after the context, as a tuple.
    type Args: Send + 'static;
    /// The return type.
    type Output;
    /// The function's name, for messages and to stop registration recursing.
    const NAME: &'static str;
    /// Runs one step of the function's machine.
    fn step(ctx: &Ctx, entry: Entry<'_, Self::Args>) -> Step<Self::Output>;
    /// Registers the activities and sub-orchestrations the function names.
    fn register(registry: &mut Registry);
}

/// A call of durable function `F`, as `f(&ctx, args..)` returns it; `.await` it.
#[must_use = "a durable function does nothing until it is `.await`ed"]
pub struct Nested<F: DurableFn> {
    args: F::Args,
}

impl<F: DurableFn> Nested<F> {
    /// The call with these arguments.
    pub fn new(args: F::Args) -> Self {
        Nested { args }
    }
}

/// A durable function the caller is parked in: its frame and, in the process that ran its last
/// step, its state.
pub struct NestedWaiting {
    frame: Frame,
    live: Option<LiveState>,
}

impl<F: DurableFn> Nested<F> {
    fn exit(step: Step<F::Output>) -> Polled<NestedWaiting, F::Output> {
        match step {
            Step::Done(v) => Polled::Ready(v),
            Step::Exit(r) => match *r {
                StepResult::Suspend { frame, command, live } => {
                    Polled::Park(NestedWaiting { frame, live }, command)
                }
                StepResult::Fault(f) => Polled::Fault(match f {
                    Fault::Incompatible(m) => {
                        Fault::Incompatible(format!("in durable function `{}`: {m}", F::NAME))
                    }
                    Fault::Corrupt(m) => {
                        Fault::Corrupt(format!("in durable function `{}`: {m}", F::NAME))
                    }
                    Fault::Codec(m) => {
                        Fault::Codec(format!("in durable function `{}`: {m}", F::NAME))
                    }
                }),
                StepResult::Complete(_) | StepResult::Fail { .. } => Polled::Fault(Fault::Corrupt(
                    format!("durable function `{}` returned a step result", F::NAME),
                )),
            },
        }
    }
}

impl<F: DurableFn> Awaitable for Nested<F> {
    type Output = F::Output;
    type Waiting = NestedWaiting;

    fn begin(self, ctx: &Ctx) -> Polled<NestedWaiting, F::Output> {
        Self::exit(F::step(ctx, Entry::Start(self.args)))
    }

    fn resume(
        waiting: NestedWaiting,
        ctx: &Ctx,
        completion: &mut Option<Completion>,
    ) -> Polled<NestedWaiting, F::Output> {
        let Some(completion) = completion.take() else {
            return Polled::Fault(Fault::Corrupt("resumed without a completion".into()));
        };
        let NestedWaiting { frame, live } = waiting;
        let resume = match live {
            Some(state) => Resume::Live { frame: &frame, state, completion },
            None => Resume::At { frame: &frame, completion },
        };
        Self::exit(F::step(ctx, Entry::Later(resume)))
    }

    fn store(waiting: &NestedWaiting, writer: &mut FrameWriter) {
        writer.write_unlisted(F::NAME, &waiting.frame);
    }

    fn restore(reader: &mut FrameReader<'_>) -> Result<NestedWaiting, Fault> {
        let frame = super::read_unlisted::<Frame>(reader, F::NAME)?;
        Ok(NestedWaiting { frame, live: None })
    }

    fn render(reader: &mut FrameReader<'_>) -> Result<Option<(String, Box<RenderedFrame>)>, Fault> {
        let frame = super::read_unlisted::<Frame>(reader, F::NAME)?;
        let mut out = None;
        let step = F::step(&Ctx::detached(), Entry::Render(&frame, &mut out));
        rendered(step, out).map(|r| Some((F::NAME.to_owned(), Box::new(r))))
    }

    fn register(registry: &mut Registry) {
        thread_local! {
            static REGISTERING: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
        }
        // A recursive durable function registers its callees once.
        let fresh = REGISTERING.with(|r| {
            let mut r = r.borrow_mut();
            let fresh = !r.contains(&F::NAME);
            if fresh {
                r.push(F::NAME);
            }
            fresh
        });
        if fresh {
            F::register(registry);
            let _ = F::step(&Ctx::detached(), Entry::Register(registry));
            REGISTERING.with(|r| r.borrow_mut().retain(|n| *n != F::NAME));
        }
    }
}
