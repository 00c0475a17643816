//! Support for the code `#[orchestration]`, `#[durable_fn]` and `#[activity]` generate, and the
//! stored format. Not a public API: it changes with the macros, and its name's version with it.
//!
//! Over 400 lines: it is one contract with the macros (every item generated code names is here
//! or in `awaiting`), and keeping that contract in one place is what lets its version move as
//! one.

pub use serde;

pub use crate::Persistable;
pub use crate::activity::{Activity, ActivityContext, ActivityRegistry};
pub use crate::graph::{RenderedFrame, StepGraph};
pub use crate::op::{
    ActivityError, Command, Completion, CompletionMismatch, DurableOp, Failure,
    NotInAnOrchestration, RetryPolicy,
};
pub use crate::orchestration::{
    ActivityOutput, Ctx, Fault, LiveState, Orchestration, OrchestrationOutput, PointInfo, Registry,
    Resume, StepResult,
};
pub use crate::record::{FORMAT_VERSION, Frame};

use std::cell::Cell;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ops::{Range, RangeFrom, RangeInclusive};
use std::sync::atomic::{AtomicBool, Ordering};

/// The codec of everything stored (bincode with a depth limit and checked round trips).
pub mod codec {
    pub use crate::codec::*;
}

mod awaiting;
mod for_list;

pub use awaiting::{
    Awaitable, DurableFn, Entry, Nested, NestedWaiting, Polled, Slot, StaticPoint, detached_ctx,
    graph, park, registered, rendered, to_json,
};

/// Where the state machine goes after a block.
#[must_use]
pub enum Step<R> {
    /// The orchestration returned.
    Done(R),
    /// Suspended or faulted: hand this to the runtime.
    Exit(Box<StepResult>),
}

/// Converts the machine's exit into the runtime's step result.
pub fn finish<R: OrchestrationOutput>(step: Step<R>) -> StepResult {
    match step {
        Step::Exit(r) => *r,
        Step::Done(out) => match out.into_result() {
            Ok(v) => match codec::encode(&v) {
                Ok(b) => StepResult::Complete(b),
                Err(e) => StepResult::Fault(Fault::Codec(format!("output: {e}"))),
            },
            Err(e) => match codec::encode(&e) {
                Ok(b) => StepResult::Fail { message: e.to_string(), payload: b },
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

/// Asserts at the user's parameter type that an input can be stored.
#[inline(always)]
pub fn assert_input<T: Persistable>() {}

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

thread_local! {
    /// The bytes the frame being written may take (set by the runtime around each step).
    static FRAME_BUDGET: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Runs `f` (a step) with frames limited to `budget` bytes on this thread.
pub(crate) fn with_frame_budget<R>(budget: usize, f: impl FnOnce() -> R) -> R {
    let before = FRAME_BUDGET.with(|b| b.replace(budget));
    let out = f();
    FRAME_BUDGET.with(|b| b.set(before));
    out
}

/// Writes the locals of a suspension point into a frame, one after the other.
pub struct FrameWriter {
    bytes: Vec<u8>,
    /// Where each value written ends in `bytes`.
    bounds: Vec<u32>,
    layout: Vec<(&'static str, &'static str)>,
    check: &'static AtomicBool,
    error: Option<Fault>,
}

impl FrameWriter {
    /// A writer for one checkpoint; `checked` remembers whether this point's locals were already
    /// checked for a faithful round trip in this process.
    pub fn new(checked: &'static AtomicBool) -> Self {
        Self {
            bytes: Vec::new(),
            bounds: Vec::new(),
            layout: Vec::new(),
            check: checked,
            error: None,
        }
    }

    /// Appends local `name`.
    pub fn write<T: Persistable>(&mut self, name: &'static str, value: &T) {
        if self.error.is_some() {
            return;
        }
        self.layout.push((name, std::any::type_name::<T>()));
        let encoded = if self.check.load(Ordering::Relaxed) {
            codec::encode(value)
        } else {
            codec::encode_checked(value)
        };
        let budget = FRAME_BUDGET.with(std::cell::Cell::get);
        let encoded = encoded.and_then(|b| {
            if self.bytes.len().saturating_add(b.len()) > budget {
                return Err(codec::CodecError::TooLarge(format!(
                    "{} bytes make the frame {} bytes, over the {budget} bytes the instance's \
                     record has room for",
                    b.len(),
                    self.bytes.len() + b.len()
                )));
            }
            codec::check_readable::<T>(&b).map(|()| b)
        });
        match encoded {
            Ok(b) => self.push(&b),
            Err(e) => self.error = Some(Fault::Codec(format!("local `{name}`: {e}"))),
        }
    }

    /// Appends a `for` loop's state (see [`read_for_state`]). The part of it that changes at
    /// each iteration is a value of its own to the chunking of large frames, so what does not
    /// change is recognised unchanged.
    pub fn write_for_state<S: ForState>(&mut self, name: &'static str, value: &S) {
        if self.error.is_some() {
            return;
        }
        let tail = match value.prepare(!self.check.load(Ordering::Relaxed)) {
            Ok(tail) => tail,
            Err(e) => {
                self.layout.push((name, std::any::type_name::<S>()));
                self.error = Some(Fault::Codec(format!("local `{name}`: {e}")));
                return;
            }
        };
        self.write(name, value);
        if self.error.is_none() && tail > 0 {
            let end = self.bytes.len();
            let start = self.bounds.len().checked_sub(2).map_or(0, |i| self.bounds[i] as usize);
            if end - start > tail {
                let split = u32::try_from(end - tail).unwrap_or(u32::MAX);
                self.bounds.insert(self.bounds.len() - 1, split);
            }
        }
    }

    /// Appends a value that is not one of the point's locals (the frame of a durable function
    /// the point awaits, named `what` in messages): outside the layout, which describes the
    /// point's own locals only.
    pub fn write_unlisted<T: Persistable>(&mut self, what: &str, value: &T) {
        if self.error.is_some() {
            return;
        }
        let budget = FRAME_BUDGET.with(std::cell::Cell::get);
        match codec::encode(value) {
            Ok(b) if self.bytes.len().saturating_add(b.len()) > budget => {
                self.error = Some(Fault::Codec(format!(
                    "the frame of `{what}` makes the frame {} bytes, over the {budget} bytes the \
                     instance's record has room for",
                    self.bytes.len() + b.len()
                )));
            }
            Ok(b) => self.push(&b),
            Err(e) => self.error = Some(Fault::Codec(format!("frame of `{what}`: {e}"))),
        }
    }

    /// Appends one encoded value (the budget keeps `bytes` far below 4 GiB).
    fn push(&mut self, encoded: &[u8]) {
        self.bytes.extend_from_slice(encoded);
        self.bounds.push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// The frame of point `identity` at source line `line` (file unknown).
    pub fn finish(self, identity: &'static str, line: u32) -> Result<Frame, Fault> {
        self.finish_at(identity, "", line)
    }

    /// The frame of point `identity`, whose `.await` is at `file`:`line`.
    pub fn finish_at(
        self,
        identity: &'static str,
        file: &'static str,
        line: u32,
    ) -> Result<Frame, Fault> {
        if let Some(Fault::Codec(m)) = self.error {
            return Err(Fault::Codec(format!(
                "at suspension point `{identity}` (line {line}): {m}"
            )));
        }
        self.check.store(true, Ordering::Relaxed);
        Ok(Frame {
            point: identity.to_owned(),
            file: file.to_owned(),
            line,
            fingerprint: fingerprint(identity, &self.layout),
            layout: self.layout.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect(),
            locals: self.bytes,
            slots: Vec::new(),
            bounds: self.bounds,
        })
    }
}

/// Reads the locals of a frame back, after checking its layout against this build's.
pub struct FrameReader<'a> {
    frame: &'a Frame,
    pos: usize,
    /// Whether the frame's `for` loops over collections hold the items they had left (written
    /// by a build before `ForList`).
    items_left: bool,
}

/// The type name of a `for` loop's items in the layouts of builds before [`ForList`], which
/// stored the items left (a `VecDeque`), and what the same local is named now.
const ITEMS_LEFT: (&str, &str) = (
    "durable_runtime::__support_v1::ForItems<",
    "durable_runtime::__support_v1::for_list::ForList<",
);

/// `layout` as a build before [`ForList`] named it, if it has a `for` loop over a collection.
fn layout_with_items_left(
    layout: &[(&'static str, &'static str)],
) -> Option<Vec<(&'static str, String)>> {
    let (before, now) = ITEMS_LEFT;
    layout
        .iter()
        .any(|(_, t)| t.contains(now))
        .then(|| layout.iter().map(|(n, t)| (*n, t.replace(now, before))).collect())
}

impl<'a> FrameReader<'a> {
    /// Checks the frame's fingerprint against `layout` (names and type names of this build).
    /// Nothing is decoded from a frame whose layout differs.
    pub fn open(
        frame: &'a Frame,
        line: u32,
        layout: &[(&'static str, &'static str)],
    ) -> Result<Self, Fault> {
        let mut items_left = false;
        if fingerprint(&frame.point, layout) != frame.fingerprint {
            let before = layout_with_items_left(layout).map(|l| {
                let l: Vec<(&str, &str)> = l.iter().map(|(n, t)| (*n, t.as_str())).collect();
                fingerprint(&frame.point, &l)
            });
            if before != Some(frame.fingerprint) {
                return Err(Fault::Incompatible(describe_layout_change(frame, line, layout)));
            }
            items_left = true;
        }
        if !frame.slots.is_empty() {
            return Err(Fault::Corrupt(format!(
                "the frame at suspension point `{}` (line {line}) was handed over without the \
                 chunks its slots hold",
                frame.point
            )));
        }
        Ok(Self { frame, pos: 0, items_left })
    }
}

/// The type name of the type a `PhantomData` stands for.
pub fn type_name_of<T>(_: &PhantomData<T>) -> &'static str {
    std::any::type_name::<T>()
}

/// Reads the next local.
pub fn read<T: Persistable>(reader: &mut FrameReader<'_>, _: PhantomData<T>) -> Result<T, Fault> {
    let rest = reader.frame.locals.get(reader.pos..).unwrap_or_default();
    let (value, used) = codec::decode_prefix::<T>(rest).map_err(|e| {
        Fault::Corrupt(format!(
            "locals at suspension point `{}` (line {}): {e}",
            reader.frame.point, reader.frame.line
        ))
    })?;
    reader.pos += used;
    Ok(value)
}

/// Reads a value `FrameWriter::write_unlisted` appended.
pub(crate) fn read_unlisted<T: Persistable>(
    reader: &mut FrameReader<'_>,
    what: &str,
) -> Result<T, Fault> {
    let rest = reader.frame.locals.get(reader.pos..).unwrap_or_default();
    let (value, used) = codec::decode_prefix::<T>(rest).map_err(|e| {
        Fault::Corrupt(format!(
            "frame of `{what}` at suspension point `{}` (line {}): {e}",
            reader.frame.point, reader.frame.line
        ))
    })?;
    reader.pos += used;
    Ok(value)
}

/// The persisted iterator of a `for` loop whose body awaits.
pub trait ForIter {
    /// The loop variable's type.
    type Item;
    /// The next item.
    fn next_item(&mut self) -> Option<Self::Item>;
}

pub use for_list::ForList;

/// The remaining part of a `for` loop over a half-open range: two numbers whatever its length.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ForRange<T>(Range<T>);

impl<T> ForRange<T> {
    /// Keeps the range.
    pub fn new(range: Range<T>) -> Self {
        ForRange(range)
    }
}

impl<T> ForIter for ForRange<T>
where
    Range<T>: Iterator<Item = T>,
{
    type Item = T;
    fn next_item(&mut self) -> Option<T> {
        self.0.next()
    }
}

/// The iterable of a `for` loop, to choose how the loop keeps it (autoref specialization): an
/// iterator that can be stored itself is kept as it is, lazily (`ForSource::for_state` through
/// `ForKeepIterator`); anything else has its items collected (`ForCollectItems`). Generated
/// code calls `(&ForSource::new(iterable)).for_state()`.
pub struct ForSource<I>(Cell<Option<I>>);

impl<I> ForSource<I> {
    /// Wraps the iterable.
    pub fn new(iterable: I) -> Self {
        ForSource(Cell::new(Some(iterable)))
    }
}

/// Chosen first: the iterable is an iterator that can be stored.
pub trait ForKeepIterator {
    /// What the loop stores.
    type State;
    /// Takes the iterable.
    fn for_state(&self) -> Self::State;
}

impl<I: Iterator + Persistable> ForKeepIterator for ForSource<I> {
    type State = ForIterator<I>;
    fn for_state(&self) -> ForIterator<I> {
        ForIterator(self.0.take())
    }
}

/// Chosen otherwise: the items are collected.
pub trait ForCollectItems {
    /// What the loop stores.
    type State;
    /// Takes the iterable.
    fn for_state(&self) -> Self::State;
}

impl<I: IntoIterator> ForCollectItems for &ForSource<I> {
    type State = ForList<I::Item>;
    fn for_state(&self) -> ForList<I::Item> {
        ForList::new(self.0.take().into_iter().flatten().collect())
    }
}

/// A stored iterator of a `for` loop (a range in a local, a serializable iterator of the user's).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ForIterator<I>(Option<I>);

impl<I: Iterator> ForIter for ForIterator<I> {
    type Item = I::Item;
    fn next_item(&mut self) -> Option<I::Item> {
        self.0.as_mut().and_then(Iterator::next)
    }
}

/// What a `for` loop keeps of its iterable.
#[diagnostic::on_unimplemented(
    message = "the items of this `for` loop cannot be kept in a checkpoint",
    label = "the items still to visit are stored while the loop awaits, so they must be owned and serializable",
    note = "iterate over a local with `&v` or `v.iter()` (the macro keeps `v` and borrows it again at each step), or over owned items: `.cloned()`, `.into_iter()`, `.to_vec()`"
)]
pub trait ForState: Persistable {
    /// Readies the state for a checkpoint (encoding what it keeps unchanged, checking that it
    /// round-trips when `check`); returns how many trailing bytes of its encoding change from one
    /// iteration to the next while the rest stays the same (0: no such split).
    #[doc(hidden)]
    fn prepare(&self, check: bool) -> Result<usize, codec::CodecError> {
        let _ = check;
        Ok(0)
    }

    /// Reads the state as a build before [`ForList`] stored it, if it is stored differently now.
    #[doc(hidden)]
    fn read_items_left(reader: &mut FrameReader<'_>) -> Option<Result<Self, Fault>> {
        let _ = reader;
        None
    }
}

#[diagnostic::do_not_recommend]
impl<T: Persistable> ForState for ForList<T> {
    fn prepare(&self, check: bool) -> Result<usize, codec::CodecError> {
        ForList::prepare(self, check)
    }

    fn read_items_left(reader: &mut FrameReader<'_>) -> Option<Result<Self, Fault>> {
        Some(read(reader, PhantomData::<VecDeque<T>>).map(ForList::new))
    }
}

#[diagnostic::do_not_recommend]
impl<I: Persistable> ForState for ForIterator<I> {}

#[diagnostic::do_not_recommend]
impl<T: Persistable> ForState for ForRange<T> {}

#[diagnostic::do_not_recommend]
impl<T: Persistable> ForState for ForRangeFrom<T> {}

#[diagnostic::do_not_recommend]
impl<T: Persistable> ForState for ForRangeInclusive<T> {}

#[diagnostic::do_not_recommend]
impl ForState for ForCursor {}

/// Reads a `for` loop's stored state: checked against `ForState`, the bound the iterable was
/// checked against, so that a loop whose items cannot be stored is reported once.
pub fn read_for_state<S: ForState>(
    reader: &mut FrameReader<'_>,
    ty: PhantomData<S>,
) -> Result<S, Fault> {
    if reader.items_left
        && let Some(state) = S::read_items_left(reader)
    {
        return state;
    }
    read(reader, ty)
}

/// Checks, at the iterable, that the loop's state can be stored.
pub fn assert_for_state<S: ForState>(_: &S) {}

/// The rest of a `for` loop over `a..`: one number, however long the loop runs.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ForRangeFrom<T>(RangeFrom<T>);

impl<T> ForRangeFrom<T> {
    /// Keeps the range.
    pub fn new(range: RangeFrom<T>) -> Self {
        ForRangeFrom(range)
    }
}

impl<T> ForIter for ForRangeFrom<T>
where
    RangeFrom<T>: Iterator<Item = T>,
{
    type Item = T;
    fn next_item(&mut self) -> Option<T> {
        self.0.next()
    }
}

/// The rest of a `for` loop over `a..=b`. A `RangeInclusive` does not store that it is
/// exhausted (serde writes only its bounds), so that is kept beside it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ForRangeInclusive<T> {
    range: RangeInclusive<T>,
    done: bool,
}

impl<T> ForRangeInclusive<T> {
    /// Keeps the range.
    pub fn new(range: RangeInclusive<T>) -> Self {
        ForRangeInclusive { range, done: false }
    }
}

impl<T: PartialOrd> ForIter for ForRangeInclusive<T>
where
    RangeInclusive<T>: Iterator<Item = T>,
{
    type Item = T;
    fn next_item(&mut self) -> Option<T> {
        if self.done {
            return None;
        }
        let item = self.range.next();
        self.done = item.is_none() || self.range.is_empty();
        item
    }
}

/// A borrowed iterable that yields its items in the same order every time it is borrowed, the
/// collection restored from a checkpoint included: a `for` loop over it can resume by position.
/// Not a `HashMap` or `HashSet`, whose order changes when they are decoded.
#[diagnostic::on_unimplemented(
    message = "this `for` loop borrows `{Self}`, which is not known to keep its order when restored from a checkpoint",
    label = "the loop resumes by position in this iterable",
    note = "a loop over a borrowed `Vec`, slice, array, `VecDeque`, `BTreeMap`, `BTreeSet` or `String` resumes by position; for a `HashMap`/`HashSet` (or another collection), iterate over owned items in a stable order, e.g. `let mut keys: Vec<_> = map.keys().cloned().collect(); keys.sort();`"
)]
pub trait StableOrder {}

macro_rules! stable_order {
    ($([$($g:tt)*] $t:ty),* $(,)?) => { $(impl<$($g)*> StableOrder for $t {})* };
}

stable_order!(
    ['a, T] &'a Vec<T>,
    ['a, T] &'a mut Vec<T>,
    ['a, T] &'a [T],
    ['a, T] &'a mut [T],
    ['a, T, const N: usize] &'a [T; N],
    ['a, T, const N: usize] &'a mut [T; N],
    ['a, T] &'a VecDeque<T>,
    ['a, T] &'a mut VecDeque<T>,
    ['a, K, V] &'a std::collections::BTreeMap<K, V>,
    ['a, K, V] &'a mut std::collections::BTreeMap<K, V>,
    ['a, T] &'a std::collections::BTreeSet<T>,
    ['a, T] std::slice::Iter<'a, T>,
    ['a, T] std::slice::IterMut<'a, T>,
    ['a, T] std::slice::Windows<'a, T>,
    ['a, T] std::slice::Chunks<'a, T>,
    ['a, T] std::slice::ChunksExact<'a, T>,
    ['a, T] std::collections::vec_deque::Iter<'a, T>,
    ['a, T] std::collections::vec_deque::IterMut<'a, T>,
    ['a, K, V] std::collections::btree_map::Iter<'a, K, V>,
    ['a, K, V] std::collections::btree_map::IterMut<'a, K, V>,
    ['a, K, V] std::collections::btree_map::Keys<'a, K, V>,
    ['a, K, V] std::collections::btree_map::Values<'a, K, V>,
    ['a, K, V] std::collections::btree_map::ValuesMut<'a, K, V>,
    ['a, T] std::collections::btree_set::Iter<'a, T>,
    ['a] std::str::Chars<'a>,
    ['a] std::str::Bytes<'a>,
    ['a] std::str::CharIndices<'a>,
    ['a] std::str::Lines<'a>,
    ['a] std::str::SplitWhitespace<'a>,
    [I: StableOrder] std::iter::Enumerate<I>,
    [I: StableOrder] std::iter::Rev<I>,
    [I: StableOrder] std::iter::Skip<I>,
    [I: StableOrder] std::iter::StepBy<I>,
    [I: StableOrder] std::iter::Take<I>,
    [I: StableOrder] std::iter::Copied<I>,
    [I: StableOrder] std::iter::Cloned<I>,
);

/// The position of a `for` loop over a borrowed collection (`&v`, `v.iter()`): the collection
/// is a stored local of its own, borrowed again at each iteration, and the cursor counts the
/// items already visited.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct ForCursor(usize);

impl ForCursor {
    /// At the first item.
    pub fn new() -> Self {
        ForCursor(0)
    }

    /// The item visited last, from `iterable` borrowed again (after an await in the body).
    pub fn current_in<I: IntoIterator + StableOrder>(&self, iterable: I) -> Option<I::Item> {
        let last = self.0.checked_sub(1)?;
        iterable.into_iter().nth(last)
    }

    /// The item after those already visited, from `iterable` borrowed again.
    pub fn next_in<I: IntoIterator + StableOrder>(&mut self, iterable: I) -> Option<I::Item> {
        let item = iterable.into_iter().nth(self.0);
        if item.is_some() {
            self.0 += 1;
        }
        item
    }
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
        "suspension point `{}` (saved at {}line {}, now line {line}) changed its stored locals: {}",
        frame.point,
        file_prefix(frame),
        frame.line,
        diffs.join("; ")
    )
}

/// A frame names a suspension point this build does not have.
pub fn unknown_point(frame: &Frame) -> Fault {
    Fault::Incompatible(format!(
        "suspension point `{}` (saved at {}line {}) does not exist in this build (deleted, or \
         moved into another scope)",
        frame.point,
        file_prefix(frame),
        frame.line
    ))
}

/// Decodes the orchestration's input.
pub fn decode_input<T: Persistable>(bytes: &[u8]) -> Result<T, Fault> {
    codec::decode(bytes).map_err(|e| Fault::Corrupt(format!("input: {e}")))
}

/// What a machine keeps in memory between steps: its state, whose stored locals must be `Send`
/// (the runtime keeps the state while other tasks run).
#[diagnostic::on_unimplemented(
    message = "a local alive across this durable `.await` is not `Send`",
    label = "a local stored at this `.await` is not `Send`",
    note = "between two steps the orchestration's locals stay in memory and may move to another of the runtime's threads: every local alive across an `.await` must be `Send` (the state type lists them in order)"
)]
pub trait Resident: std::any::Any + Send {}

// `do_not_recommend`: the error names `Resident`, with the message above, instead of the
// first field of the state that is not `Send`.
#[diagnostic::do_not_recommend]
impl<T: std::any::Any + Send> Resident for T {}

/// Splits a later step's resume into its frame, the state kept in memory if any, and the
/// completion; `None` for the first step.
pub fn resume_parts(resume: Resume<'_>) -> Option<(&Frame, Option<LiveState>, Completion)> {
    match resume {
        Resume::Start(_) => None,
        Resume::At { frame, completion } => Some((frame, None, completion)),
        Resume::Live { frame, state, completion } => Some((frame, Some(state), completion)),
    }
}

/// The state kept in memory, when it is the machine's state type `S`.
pub fn take_live<S: std::any::Any>(live: Option<LiveState>) -> Option<S> {
    live.and_then(LiveState::take)
}

/// Parks at a suspension point: the frame plus the command of `op`, and the machine's `state`
/// for the next step if it runs in this process.
pub fn suspend<O: DurableOp, R, S: Resident>(
    frame: Result<Frame, Fault>,
    op: O,
    state: S,
) -> Step<R> {
    let frame = match frame {
        Ok(f) => f,
        Err(e) => return Step::Exit(Box::new(StepResult::Fault(e))),
    };
    match op.into_command() {
        Ok(command) => Step::Exit(Box::new(StepResult::Suspend {
            frame,
            command,
            live: Some(LiveState::new(state)),
        })),
        Err(e) => Step::Exit(Box::new(StepResult::Fault(Fault::Codec(format!(
            "command input at `{}`: {e}",
            frame.point
        ))))),
    }
}

/// A step that cannot go on.
pub fn fault<R>(fault: Fault) -> Step<R> {
    Step::Exit(Box::new(StepResult::Fault(fault)))
}

fn file_prefix(frame: &Frame) -> String {
    if frame.file.is_empty() { String::new() } else { format!("{} ", frame.file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored fingerprints must never change between builds: this pins the function.
    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fingerprint("call(charge)#0", &[]), 0xf331_9113_6972_529e);
        assert_eq!(
            fingerprint(
                "for0/call(step)#0",
                &[("sum", "u64"), ("iter@for0#0", "x::ForRange<u64>")]
            ),
            0x175d_32e9_e06f_df5b
        );
        assert_ne!(fingerprint("a", &[("x", "u64")]), fingerprint("a", &[("x", "u32")]));
        assert_ne!(fingerprint("a", &[("xu", "64")]), fingerprint("a", &[("x", "u64")]));
    }

    /// A frame a build before `ForList` wrote in a `for` loop over a collection (the items left,
    /// under the type name `ForItems`) still resumes.
    #[test]
    fn a_loop_stored_as_the_items_left_resumes() {
        let state = std::any::type_name::<ForList<String>>();
        assert!(state.starts_with(ITEMS_LEFT.1), "{state}");
        let old_state = state.replace(ITEMS_LEFT.1, ITEMS_LEFT.0);
        assert_eq!(old_state, "durable_runtime::__support_v1::ForItems<alloc::string::String>");
        let layout = [("sum", "u32"), ("iter@for0#0", state)];
        let old_layout = [("sum", "u32"), ("iter@for0#0", old_state.as_str())];
        let mut locals = codec::encode(&5u32).unwrap();
        let left: VecDeque<String> = ["b".into(), "c".into()].into();
        locals.extend(codec::encode(&left).unwrap());
        let frame = Frame {
            point: "for0/call(step)#0".into(),
            file: String::new(),
            line: 3,
            fingerprint: fingerprint("for0/call(step)#0", &old_layout),
            layout: old_layout.iter().map(|(n, t)| ((*n).into(), (*t).into())).collect(),
            locals,
            slots: Vec::new(),
            bounds: Vec::new(),
        };
        let mut r = FrameReader::open(&frame, 3, &layout).unwrap();
        assert_eq!(read(&mut r, PhantomData::<u32>).unwrap(), 5);
        let mut it = read_for_state(&mut r, PhantomData::<ForList<String>>).unwrap();
        let rest: Vec<String> = std::iter::from_fn(|| it.next_item()).collect();
        assert_eq!(rest, ["b", "c"]);
        // Any other change of the layout is still refused.
        let other = [("total", "u32"), ("iter@for0#0", state)];
        assert!(matches!(FrameReader::open(&frame, 3, &other), Err(Fault::Incompatible(_))));
    }
}
