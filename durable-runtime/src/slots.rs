//! Frames stored in pieces: a checkpoint writes what changed, not every live local.
//!
//! A local of [`CHUNKED_FROM`] bytes or more is cut into chunks where its content says
//! (a gear hash over the last 64 bytes: an unchanged local gives the same chunks, and a local
//! changed in one place gives the same chunks away from the change). A chunk that a frame holds
//! unchanged from the frame before is written once to a *slot* of its own ([`Space::Slots`]),
//! and the records after name the slot instead of holding the bytes.
//!
//! Two rules keep every record readable after a crash at any instant, whatever order the store
//! makes writes durable in (sled does not keep two keys' writes together through a power cut):
//! - a record names a slot only once a flush that began after the slot's write has succeeded
//!   (the slot is durable before any record naming it is written; until then the chunk stays
//!   inline);
//! - a slot no record names any more is deleted only once the first record not naming it is
//!   durable the same way.
//!
//! Slots are keyed by instance, the lease token of the writer and the chunk's hash, so a worker
//! whose lease was taken over can neither delete nor overwrite the slots of the new owner. What
//! a crash leaves unnamed is deleted with the instance's other slots when the instance ends or is
//! purged.
//!
//! [`Space::Slots`]: crate::store::Space::Slots

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::record::{Frame, SlotRef};

/// Locals smaller than this stay inline in the record.
pub(crate) const CHUNKED_FROM: usize = 8 * 1024;
/// Chunks are at least this long (but for the last of a local) ...
const MIN_CHUNK: usize = 1024;
/// ... and at most this long.
const MAX_CHUNK: usize = 32 * 1024;
/// A cut where the top 12 bits of the gear hash are zero: about one every 4 KiB past the minimum.
const CUT_MASK: u64 = 0xfff0_0000_0000_0000;

/// The chunks of a local cut into this many or more are grouped into list slots (a tree of them:
/// groups of durable slots, then groups of those groups): what a record holds of a large local
/// is a few names, whatever its size, plus the path to what changed.
const LISTED_FROM: usize = 4;

/// The hash naming a chunk (blake3, truncated).
pub(crate) type Hash = [u8; 16];

/// One entry of a list slot: a chunk slot or a list slot, the first at the list's position,
/// each after the one before.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Listed {
    len: u64,
    token: u64,
    hash: Hash,
    list: bool,
}

/// A part of a local as a plan sees it: a chunk, or a list slot standing for consecutive parts.
#[derive(Debug, Clone)]
struct Entry {
    span: Range<usize>,
    hash: Hash,
    /// The token of its durable slot, when a record may name it.
    token: Option<u64>,
    list: bool,
}

/// `level` cut into groups: a group ends after an entry whose hash says so (about one in 16;
/// a different byte of the hash at each `depth`, so that what did not merge at one level is
/// grouped anew at the next). The cuts depend on the entries' own hashes only, so a change at
/// one place of a local leaves the groups elsewhere as they were.
fn groups(level: &[Entry], depth: usize) -> impl Iterator<Item = &[Entry]> {
    level.split_inclusive(move |e| e.hash[depth % 16] & 0x0f == 0)
}

/// What a list slot for `group` holds, if the group can have one: two entries or more, all in
/// durable slots.
fn listed(group: &[Entry]) -> Option<Vec<Listed>> {
    if group.len() < 2 {
        return None;
    }
    group
        .iter()
        .map(|e| {
            e.token.map(|token| Listed {
                len: e.span.len() as u64,
                token,
                hash: e.hash,
                list: e.list,
            })
        })
        .collect()
}

/// The gear table: 256 fixed pseudo-random words (splitmix64), the same in every build.
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x6475_7261_626c_6521;
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// The end of the chunk of `data` that begins at `from`.
fn cut(data: &[u8], from: usize) -> usize {
    let end = data.len().min(from + MAX_CHUNK);
    if data.len() - from <= MIN_CHUNK {
        return data.len();
    }
    let mut h: u64 = 0;
    for (i, b) in data.iter().enumerate().take(end).skip(from + MIN_CHUNK) {
        h = (h << 1).wrapping_add(GEAR[usize::from(*b)]);
        if h & CUT_MASK == 0 {
            return i + 1;
        }
    }
    end
}

/// The chunks `data` is cut into, as ranges.
pub(crate) fn chunks(data: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut from = 0;
    while from < data.len() {
        let end = cut(data, from);
        out.push(from..end);
        from = end;
    }
    out
}

/// The hash naming `bytes`.
pub(crate) fn hash(bytes: &[u8]) -> Hash {
    let full = blake3::hash(bytes);
    let mut out = [0; 16];
    out.copy_from_slice(&full.as_bytes()[..16]);
    out
}

/// The key of a slot: the `prefix` of its instance's incarnation, the writer's token, the hash.
pub(crate) fn key(prefix: &[u8], token: u64, hash: &Hash) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 24);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&token.to_be_bytes());
    k.extend_from_slice(hash);
    k
}

/// What every slot key of instance `id` begins with: the id and `0xff` (never in UTF-8).
pub(crate) fn instance_prefix(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 33);
    k.extend_from_slice(id.as_bytes());
    k.push(0xff);
    k
}

/// What the slot keys of the incarnation of `id` created at `created_ms` begin with: an
/// instance purged and started again under the same id never shares a slot with the old one.
pub(crate) fn prefix(id: &str, created_ms: u64) -> Vec<u8> {
    let mut k = instance_prefix(id);
    k.extend_from_slice(&created_ms.to_be_bytes());
    k
}

/// When a write was made, as the group commit counts: durable once a flush that began after it
/// succeeded, with no failed flush in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    /// The commit epoch (moves on when a flush fails).
    pub epoch: u64,
    /// The number of the last flush that had begun.
    pub began: u64,
}

/// What the group commit can say of a [`Mark`].
pub(crate) trait Durability {
    /// Whether what was written at `mark` is durable.
    fn durable(&self, mark: Mark) -> bool;
    /// Whether a failed flush since `mark` may have discarded what was written then.
    fn lost(&self, mark: Mark) -> bool;
}

#[derive(Debug, Clone, Copy)]
enum SlotState {
    /// Written at the mark; named by no record until that is durable.
    Written(Mark),
    /// Durable: records may name it.
    Durable,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    token: u64,
    state: SlotState,
}

/// One chunk of a frame's locals.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    at: usize,
    len: usize,
    hash: Hash,
}

/// The locals of the last frame written, and how they were cut.
#[derive(Debug, Default)]
struct Last {
    locals: Vec<u8>,
    /// Per local: its range and its chunks (none for a local kept whole).
    locals_cut: Vec<(Range<usize>, Vec<Chunk>)>,
    /// The hashes of the lists of chunk slots it could name.
    lists: HashSet<Hash>,
}

/// What a checkpoint writes: the record's frame as stored and the slots to write before it.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The frame as the record stores it (chunks named by slots cut out).
    pub stored: Frame,
    /// Chunk slots to write before the record: key and the range of the frame's locals.
    chunk_writes: Vec<(Vec<u8>, Range<usize>)>,
    /// List slots to write before the record: key and content.
    list_writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// The hashes of every slot the frame holds or lists, named or not.
    hashes: Vec<Hash>,
    new_slots: Vec<(Hash, u64)>,
    last: Last,
}

impl Plan {
    /// The slots to write before the record, key and value, `locals` being the planned frame's.
    pub(crate) fn writes<'a>(
        &'a self,
        locals: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let chunks = self.chunk_writes.iter().map(|(k, r)| (k.as_slice(), &locals[r.clone()]));
        chunks.chain(self.list_writes.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    /// Whether it writes any slot.
    pub(crate) fn writes_slots(&self) -> bool {
        !self.chunk_writes.is_empty() || !self.list_writes.is_empty()
    }
}

/// The list slots of a plan: those of the last frame (seen), those this one computed, and those
/// it writes (key and content).
struct Lists {
    seen: HashSet<Hash>,
    computed: HashSet<Hash>,
    writes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// How a planned frame holds a chunk or a list of chunks.
enum Naming {
    /// By naming its durable slot, written under this token.
    Named(u64),
    /// Inline, its slot written now.
    Write,
    /// Inline.
    Inline,
}

/// What a driver knows of its instance's slots, between its checkpoints. Dropped with the
/// driver: a new driver starts from the slots its loaded record names.
#[derive(Debug, Default)]
pub(crate) struct SlotBook {
    slots: HashMap<Hash, Slot>,
    /// Slots no longer named, with the mark of the first record that does not name them.
    garbage: Vec<(Hash, u64, Mark)>,
    last: Option<Last>,
    /// Whether this instance may have slots in the store (then its end deletes them).
    touched: bool,
}

impl SlotBook {
    /// Whether the instance may have slots in the store.
    pub(crate) fn touched(&self) -> bool {
        self.touched
    }

    /// Whether slots wait for a flush: written but not yet known durable, or to delete once a
    /// record is.
    pub(crate) fn waiting(&self) -> bool {
        !self.garbage.is_empty()
            || self.slots.values().any(|s| matches!(s.state, SlotState::Written(_)))
    }

    /// The bytes it holds (its copy of the last frame's locals, mostly).
    pub(crate) fn bytes(&self) -> usize {
        let last = self.last.as_ref().map_or(0, |l| l.locals.len() + 32 * l.locals_cut.len());
        last + 64 * (self.slots.len() + self.garbage.len())
    }

    /// Whether it knows anything worth keeping for the next checkpoint.
    pub(crate) fn is_empty(&self) -> bool {
        !self.touched && self.last.is_none()
    }

    /// Takes in the slots read for a record from the store (see [`Resolved`]): durable (a record
    /// names durable slots only, and a list lists durable slots only).
    pub(crate) fn adopt(&mut self, slots: &[SlotRef]) {
        for s in slots {
            self.slots.insert(s.hash, Slot { token: s.token, state: SlotState::Durable });
            self.touched = true;
        }
    }

    /// Keys of the slots no record names any more whose first non-naming record is durable:
    /// to delete now. Entries a failed flush may have undone are forgotten (their slots stay
    /// until the instance ends).
    pub(crate) fn collect(&mut self, prefix: &[u8], commit: &impl Durability) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let slots = &self.slots;
        self.garbage.retain(|(hash, token, mark)| {
            if commit.lost(*mark) || slots.get(hash).is_some_and(|s| s.token == *token) {
                return false;
            }
            if commit.durable(*mark) {
                out.push(key(prefix, *token, hash));
                return false;
            }
            true
        });
        out
    }

    /// How `frame` is stored by a writer holding lease `token`, its slots keyed under `prefix`.
    pub(crate) fn plan(
        &mut self,
        prefix: &[u8],
        token: u64,
        frame: &Frame,
        commit: &impl Durability,
    ) -> Plan {
        let locals = &frame.locals;
        let mut ranges = Vec::with_capacity(frame.bounds.len().max(1));
        let mut start = 0;
        for &end in &frame.bounds {
            let end = (end as usize).min(locals.len());
            ranges.push(start..end);
            start = end;
        }
        if start < locals.len() {
            ranges.push(start..locals.len());
        }
        let last = self.last.take().unwrap_or_default();
        let seen: HashSet<Hash> =
            last.locals_cut.iter().flat_map(|(_, c)| c.iter().map(|c| c.hash)).collect();
        let mut locals_cut = Vec::with_capacity(ranges.len());
        for (i, range) in ranges.into_iter().enumerate() {
            if range.len() < CHUNKED_FROM {
                locals_cut.push((range, Vec::new()));
                continue;
            }
            let bytes = &locals[range.clone()];
            let before = last.locals_cut.get(i).filter(|(r, c)| {
                !c.is_empty() && r.len() == bytes.len() && last.locals[r.clone()] == *bytes
            });
            let cut = match before {
                Some((r, c)) => {
                    c.iter().map(|c| Chunk { at: c.at - r.start + range.start, ..*c }).collect()
                }
                None => chunks(bytes)
                    .into_iter()
                    .map(|c| Chunk {
                        at: c.start + range.start,
                        len: c.len(),
                        hash: hash(&bytes[c]),
                    })
                    .collect(),
            };
            locals_cut.push((range, cut));
        }
        // Decide, chunk by chunk: name a durable slot, write a slot for a chunk seen unchanged,
        // or keep it inline; then, local by local, group what is named into list slots.
        let mut lists = Lists { seen: last.lists, computed: HashSet::new(), writes: Vec::new() };
        let mut stored_locals = Vec::new();
        let mut refs = Vec::new();
        let mut chunk_writes = Vec::new();
        let mut new_slots = Vec::new();
        let mut hashes = Vec::new();
        let mut copied = 0;
        for (_, cut) in &locals_cut {
            let mut level = Vec::with_capacity(cut.len());
            for chunk in cut {
                hashes.push(chunk.hash);
                let seen = seen.contains(&chunk.hash);
                let token = match self.naming(&chunk.hash, seen, &new_slots, commit) {
                    Naming::Named(slot_token) => Some(slot_token),
                    Naming::Write => {
                        chunk_writes.push((
                            key(prefix, token, &chunk.hash),
                            chunk.at..chunk.at + chunk.len,
                        ));
                        new_slots.push((chunk.hash, token));
                        None
                    }
                    Naming::Inline => None,
                };
                let span = chunk.at..chunk.at + chunk.len;
                level.push(Entry { span, hash: chunk.hash, token, list: false });
            }
            if cut.len() >= LISTED_FROM {
                let writer = (prefix, token);
                level =
                    self.list_tree(level, writer, &mut lists, &mut hashes, &mut new_slots, commit);
            }
            for e in level {
                let Some(slot_token) = e.token else { continue };
                stored_locals.extend_from_slice(&locals[copied..e.span.start]);
                copied = e.span.end;
                refs.push(SlotRef {
                    at: e.span.start as u64,
                    len: e.span.len() as u64,
                    token: slot_token,
                    hash: e.hash,
                    list: e.list,
                });
            }
        }
        stored_locals.extend_from_slice(&locals[copied..]);
        tracing::trace!(
            bytes = locals.len(),
            named = refs.len(),
            slot_writes = chunk_writes.len() + lists.writes.len(),
            inline = stored_locals.len(),
            "frame planned"
        );
        let stored = Frame { locals: stored_locals, slots: refs, ..frame.clone_head() };
        let last = Last { locals: locals.clone(), locals_cut, lists: lists.computed };
        Plan { stored, chunk_writes, list_writes: lists.writes, hashes, new_slots, last }
    }

    /// The entries of one local (its chunks, in order) grouped into list slots, level by level,
    /// while any group merges: a group of named entries whose list slot is durable becomes one
    /// entry; a list seen in the last frame is written, by `writer` (key prefix and token).
    fn list_tree(
        &mut self,
        mut level: Vec<Entry>,
        (prefix, token): (&[u8], u64),
        lists: &mut Lists,
        hashes: &mut Vec<Hash>,
        new_slots: &mut Vec<(Hash, u64)>,
        commit: &impl Durability,
    ) -> Vec<Entry> {
        for depth in 0.. {
            let mut next = Vec::with_capacity(level.len());
            let mut merged = false;
            for group in groups(&level, depth) {
                let Some(listed) = listed(group) else {
                    next.extend_from_slice(group);
                    continue;
                };
                let content = crate::codec::encode(&listed).unwrap_or_default();
                let h = hash(&content);
                hashes.push(h);
                lists.computed.insert(h);
                match self.naming(&h, lists.seen.contains(&h), new_slots, commit) {
                    Naming::Named(slot_token) => {
                        let span = group[0].span.start..group[group.len() - 1].span.end;
                        next.push(Entry { span, hash: h, token: Some(slot_token), list: true });
                        merged = true;
                        continue;
                    }
                    Naming::Write => {
                        lists.writes.push((key(prefix, token, &h), content));
                        new_slots.push((h, token));
                    }
                    Naming::Inline => {}
                }
                next.extend_from_slice(group);
            }
            if !merged {
                break;
            }
            level = next;
        }
        level
    }

    /// Whether the slot of content `hash` can be named now, is to be written now (its content
    /// was `seen` unchanged in the last frame, or a failed flush may have discarded it), or
    /// neither (its content stays inline).
    fn naming(
        &mut self,
        hash: &Hash,
        seen: bool,
        new_slots: &[(Hash, u64)],
        commit: &impl Durability,
    ) -> Naming {
        match self.slots.get_mut(hash) {
            Some(s) => match s.state {
                SlotState::Durable => Naming::Named(s.token),
                SlotState::Written(m) if commit.durable(m) => {
                    s.state = SlotState::Durable;
                    Naming::Named(s.token)
                }
                SlotState::Written(m) if commit.lost(m) => Naming::Write,
                SlotState::Written(_) => Naming::Inline,
            },
            None if seen && !new_slots.iter().any(|(h, _)| h == hash) => Naming::Write,
            None => Naming::Inline,
        }
    }

    /// The slots of `plan` were written (whether its record was or not) at `mark`.
    pub(crate) fn slots_written(&mut self, plan: &Plan, mark: Mark) {
        for (hash, token) in &plan.new_slots {
            self.slots.insert(*hash, Slot { token: *token, state: SlotState::Written(mark) });
            self.touched = true;
        }
    }

    /// The record of `plan` was written at `mark`: slots its frame does not hold are deleted
    /// once that record is durable.
    pub(crate) fn record_written(&mut self, plan: Plan, mark: Mark) {
        let held: HashSet<Hash> = plan.hashes.into_iter().collect();
        let garbage = &mut self.garbage;
        self.slots.retain(|hash, slot| {
            if held.contains(hash) {
                return true;
            }
            garbage.push((*hash, slot.token, mark));
            false
        });
        self.last = Some(plan.last);
    }

    /// The instance's frame is gone (it ended or started anew): every slot is garbage.
    pub(crate) fn record_without_frame(&mut self, mark: Mark) {
        let garbage = &mut self.garbage;
        for (hash, slot) in self.slots.drain() {
            garbage.push((hash, slot.token, mark));
        }
        self.last = None;
    }
}

/// Why a stored frame could not be read back.
#[derive(Debug)]
pub(crate) enum Unresolved<E> {
    /// Reading a slot failed: try again later.
    Store(E),
    /// The record or its slots are damaged: why.
    Damaged(String),
}

/// A stored frame read back: its whole locals, and every slot read for them (lists and the
/// chunks they list).
#[derive(Debug)]
pub(crate) struct Resolved {
    pub locals: Vec<u8>,
    pub slots: Vec<SlotRef>,
}

/// The locals of a stored frame with its slots' bytes put back, reading each slot with `read`
/// (`None`: missing). The total is checked against `limit` bytes before anything is read, and
/// each slot against its hash (and a chunk against its length) as it is read.
pub(crate) fn resolve<E>(
    frame: &Frame,
    limit: usize,
    mut read: impl FnMut(&SlotRef) -> Result<Option<Vec<u8>>, E>,
) -> Result<Resolved, Unresolved<E>> {
    let damaged = |why: String| Unresolved::Damaged(why);
    let total = frame
        .slots
        .iter()
        .try_fold(frame.locals.len() as u64, |n, s| n.checked_add(s.len))
        .filter(|n| *n <= limit as u64)
        .ok_or_else(|| damaged(format!("its frame's slots would make it over {limit} bytes")))?;
    let mut fetch = |s: &SlotRef| {
        let value = read(s).map_err(Unresolved::Store)?.ok_or_else(|| {
            damaged(format!(
                "its frame's slot at byte {} ({} bytes) is missing from the store",
                s.at, s.len
            ))
        })?;
        if (!s.list && value.len() as u64 != s.len) || hash(&value) != s.hash {
            return Err(damaged(format!(
                "its frame's slot at byte {} does not hold what the record names ({} bytes \
                 found, {} named)",
                s.at,
                value.len(),
                s.len
            )));
        }
        Ok(value)
    };
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut read_slots = Vec::with_capacity(frame.slots.len());
    let mut inline = frame.locals.as_slice();
    for s in &frame.slots {
        let gap = usize::try_from(s.at)
            .ok()
            .and_then(|at| at.checked_sub(out.len()))
            .filter(|g| *g <= inline.len())
            .ok_or_else(|| damaged(format!("its frame's slot at byte {} is out of order", s.at)))?;
        out.extend_from_slice(&inline[..gap]);
        inline = &inline[gap..];
        // A list slot stands for its entries, which may be lists in turn: depth first, in order.
        let mut stack = vec![*s];
        while let Some(r) = stack.pop() {
            let value = fetch(&r)?;
            read_slots.push(r);
            if !r.list {
                out.extend_from_slice(&value);
                continue;
            }
            let listed: Vec<Listed> = crate::codec::decode(&value).map_err(|e| {
                damaged(format!("its frame's list of slots at byte {} does not decode: {e}", r.at))
            })?;
            // A list holds two entries or more, and every chunk but a local's last is over
            // `MIN_CHUNK` bytes: a list of another length, or an empty entry, is not one this
            // runtime wrote (and each entry would cost a read).
            let most = r.len / MIN_CHUNK as u64 + 1;
            if listed.len() < 2 || listed.len() as u64 > most || listed.iter().any(|l| l.len == 0) {
                return Err(damaged(format!(
                    "its frame's list of slots at byte {} names {} entries for {} bytes",
                    r.at,
                    listed.len(),
                    r.len
                )));
            }
            let covered = listed.iter().try_fold(0u64, |n, l| n.checked_add(l.len));
            if covered != Some(r.len) {
                return Err(damaged(format!(
                    "its frame's list of slots at byte {} does not cover the {} bytes it is \
                     named for",
                    r.at, r.len
                )));
            }
            let mut at = r.at;
            let entries: Vec<SlotRef> = listed
                .iter()
                .map(|l| {
                    let e = SlotRef { at, len: l.len, token: l.token, hash: l.hash, list: l.list };
                    at += l.len;
                    e
                })
                .collect();
            stack.extend(entries.into_iter().rev());
        }
    }
    out.extend_from_slice(inline);
    Ok(Resolved { locals: out, slots: read_slots })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A commit whose flushes the test moves by hand.
    #[derive(Default)]
    struct Flushes {
        done: Cell<u64>,
        epoch: Cell<u64>,
    }

    impl Flushes {
        fn mark(&self) -> Mark {
            Mark { epoch: self.epoch.get(), began: self.done.get() }
        }
        fn flush(&self) {
            self.done.set(self.done.get() + 1);
        }
    }

    impl Durability for Flushes {
        fn durable(&self, m: Mark) -> bool {
            m.epoch == self.epoch.get() && self.done.get() > m.began
        }
        fn lost(&self, m: Mark) -> bool {
            m.epoch != self.epoch.get()
        }
    }

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 56) as u8
            })
            .collect()
    }

    fn frame(locals: &[&[u8]]) -> Frame {
        let mut f = Frame {
            point: "p".into(),
            file: String::new(),
            line: 1,
            fingerprint: 7,
            layout: Vec::new(),
            locals: Vec::new(),
            slots: Vec::new(),
            bounds: Vec::new(),
        };
        for l in locals {
            f.locals.extend_from_slice(l);
            f.bounds.push(u32::try_from(f.locals.len()).unwrap());
        }
        f
    }

    /// Runs `plan` as a checkpoint would: slots into `store`, then the record; returns the
    /// stored frame.
    fn checkpoint(
        book: &mut SlotBook,
        store: &mut HashMap<Vec<u8>, Vec<u8>>,
        f: &Frame,
        c: &Flushes,
    ) -> Frame {
        for k in book.collect(b"i", c) {
            store.remove(&k);
        }
        let plan = book.plan(b"i", 3, f, c);
        for (k, v) in plan.writes(&f.locals) {
            store.insert(k.to_vec(), v.to_vec());
        }
        book.slots_written(&plan, c.mark());
        let stored = plan.stored.clone();
        book.record_written(plan, c.mark());
        stored
    }

    fn read_back(stored: &Frame, store: &HashMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
        let read = |s: &SlotRef| Ok::<_, ()>(store.get(&key(b"i", s.token, &s.hash)).cloned());
        resolve(stored, usize::MAX, read).unwrap().locals
    }

    /// What resolving `f` with one slot value `v` says, as text.
    fn resolved(f: &Frame, v: Option<&[u8]>, limit: usize) -> Result<Vec<u8>, String> {
        let read = |_: &SlotRef| Ok::<_, ()>(v.map(<[u8]>::to_vec));
        resolve(f, limit, read).map(|r| r.locals).map_err(|e| match e {
            Unresolved::Damaged(why) => why,
            Unresolved::Store(()) => "store".into(),
        })
    }

    #[test]
    fn cuts_depend_on_content_only() {
        let data = bytes(200_000, 1);
        let all = chunks(&data);
        assert!(all.len() > 20, "about one cut per 5 KiB: {}", all.len());
        assert!(all.iter().all(|c| c.len() <= MAX_CHUNK));
        assert!(all[..all.len() - 1].iter().all(|c| c.len() > MIN_CHUNK));
        // Dropping the first 100 bytes moves the first cut only: the rest are the same chunks.
        let shorter = chunks(&data[100..]);
        let tail = |cs: &[Range<usize>], d: &[u8]| -> Vec<Hash> {
            cs.iter().skip(2).map(|c| hash(&d[c.clone()])).collect()
        };
        let a = tail(&all, &data);
        let b = tail(&shorter, &data[100..]);
        assert!(a.ends_with(&b[b.len() - (a.len() - 2)..]));
    }

    #[test]
    fn an_unchanged_local_is_named_from_the_third_checkpoint_on() {
        let (c, mut store, mut book) = (Flushes::default(), HashMap::new(), SlotBook::default());
        let big = bytes(100_000, 2);
        let f = |n: u8| frame(&[&big, &[n; 8]]);
        let first = checkpoint(&mut book, &mut store, &f(1), &c);
        assert!(first.slots.is_empty() && store.is_empty(), "first seen: inline");
        c.flush();
        let second = checkpoint(&mut book, &mut store, &f(2), &c);
        assert!(second.slots.is_empty(), "seen again: written to slots, still inline");
        assert!(!store.is_empty());
        c.flush();
        let third = checkpoint(&mut book, &mut store, &f(3), &c);
        assert!(third.locals.len() < 100, "named: {} bytes inline", third.locals.len());
        assert_eq!(read_back(&third, &store), f(3).locals);
    }

    #[test]
    fn no_slot_is_named_before_a_flush_made_it_durable() {
        let (c, mut store, mut book) = (Flushes::default(), HashMap::new(), SlotBook::default());
        let big = bytes(50_000, 3);
        for n in 0..5u8 {
            let stored = checkpoint(&mut book, &mut store, &frame(&[&big, &[n]]), &c);
            assert!(stored.slots.is_empty(), "no flush yet: checkpoint {n} stays inline");
        }
        c.flush();
        let stored = checkpoint(&mut book, &mut store, &frame(&[&big, &[9]]), &c);
        assert!(!stored.slots.is_empty());
    }

    #[test]
    fn a_failed_flush_makes_the_slots_be_written_again() {
        let (c, mut store, mut book) = (Flushes::default(), HashMap::new(), SlotBook::default());
        let big = bytes(50_000, 4);
        checkpoint(&mut book, &mut store, &frame(&[&big, &[0]]), &c);
        checkpoint(&mut book, &mut store, &frame(&[&big, &[1]]), &c);
        // The flush fails: the store forgets the slots.
        c.epoch.set(1);
        store.clear();
        c.flush();
        let stored = checkpoint(&mut book, &mut store, &frame(&[&big, &[2]]), &c);
        assert!(stored.slots.is_empty(), "lost slots are not named");
        assert!(!store.is_empty(), "they are written again");
        c.flush();
        let stored = checkpoint(&mut book, &mut store, &frame(&[&big, &[3]]), &c);
        assert!(!stored.slots.is_empty());
        assert_eq!(read_back(&stored, &store), frame(&[&big, &[3]]).locals);
    }

    #[test]
    fn slots_no_record_names_go_once_the_record_is_durable() {
        let (c, mut store, mut book) = (Flushes::default(), HashMap::new(), SlotBook::default());
        let (a, b) = (bytes(40_000, 5), bytes(40_000, 6));
        for n in 0..3u8 {
            checkpoint(&mut book, &mut store, &frame(&[&a, &[n]]), &c);
            c.flush();
        }
        let named_a = store.len();
        assert!(named_a > 0);
        // `a` is replaced by `b`: its slots stay while the record naming them may be the
        // durable one, and go after a flush made the record without them durable.
        let stored = checkpoint(&mut book, &mut store, &frame(&[&b, &[9]]), &c);
        assert!(stored.slots.is_empty());
        checkpoint(&mut book, &mut store, &frame(&[&b, &[10]]), &c);
        assert!(store.len() >= named_a, "not durable yet: kept");
        c.flush();
        let stored = checkpoint(&mut book, &mut store, &frame(&[&b, &[11]]), &c);
        let of_b: HashSet<Hash> = chunks(&b).into_iter().map(|r| hash(&b[r])).collect();
        assert!(
            store.keys().all(|k| of_b.contains(&k[k.len() - 16..])),
            "the slots of `a` are gone"
        );
        assert_eq!(read_back(&stored, &store), frame(&[&b, &[11]]).locals);
    }

    #[test]
    fn a_for_loop_over_a_vec_writes_a_bounded_amount_per_iteration() {
        let (c, mut store, mut book) = (Flushes::default(), HashMap::new(), SlotBook::default());
        let items = bytes(90_000, 7);
        let mut inline = Vec::new();
        for i in 0..200 {
            let stored = checkpoint(&mut book, &mut store, &frame(&[&items[i * 9..], &[1]]), &c);
            c.flush();
            inline.push(stored.locals.len());
            assert_eq!(read_back(&stored, &store), frame(&[&items[i * 9..], &[1]]).locals);
        }
        let late = inline[20..].iter().max().unwrap();
        assert!(*late <= MAX_CHUNK + MIN_CHUNK, "{late} bytes inline");
    }

    #[test]
    fn resolving_checks_what_the_slots_hold() {
        let f = Frame {
            slots: vec![SlotRef { at: 2, len: 3, token: 1, hash: hash(b"abc"), list: false }],
            locals: b"xyz".to_vec(),
            ..frame(&[])
        };
        assert_eq!(resolved(&f, Some(b"abc"), 100).unwrap(), b"xyabcz");
        assert!(resolved(&f, None, 100).unwrap_err().contains("missing"));
        assert!(resolved(&f, Some(b"abd"), 100).unwrap_err().contains("does not"));
        assert!(resolved(&f, Some(b"abc"), 5).unwrap_err().contains("over"));
        let late = Frame { slots: vec![SlotRef { at: 9, ..f.slots[0] }], ..f.clone() };
        assert!(resolved(&late, Some(b"abc"), 100).unwrap_err().contains("order"));
        // Hostile lengths: refused before anything is read, never an overflow.
        let mut reads = 0;
        let huge = Frame { slots: vec![SlotRef { len: u64::MAX, ..f.slots[0] }; 3], ..f.clone() };
        let out = resolve(&huge, usize::MAX, |_| {
            reads += 1;
            Ok::<_, ()>(None)
        });
        assert!(matches!(out, Err(Unresolved::Damaged(why)) if why.contains("over")));
        assert_eq!(reads, 0);
    }

    #[test]
    fn a_large_unchanged_local_is_named_by_one_list_slot_whatever_its_size() {
        let mut record_bytes = Vec::new();
        for size in [100_000, 1_000_000] {
            let (c, mut store, mut book) =
                (Flushes::default(), HashMap::new(), SlotBook::default());
            let big = bytes(size, 8);
            let f = |n: u8| frame(&[&big, &[n; 8]]);
            let mut stored = None;
            let mut counts = Vec::new();
            for n in 0..16 {
                let s = checkpoint(&mut book, &mut store, &f(n), &c);
                counts.push(s.slots.len());
                stored = Some(s);
                c.flush();
            }
            let stored = stored.unwrap();
            assert_eq!(stored.slots.len(), 1, "one slot named");
            assert!(stored.slots[0].list && stored.slots[0].len == size as u64);
            assert_eq!(read_back(&stored, &store), f(15).locals);
            record_bytes.push(crate::codec::encode(&stored).unwrap().len());
            // A driver that reads the record back knows the list and the chunks it lists.
            let read = |s: &SlotRef| Ok::<_, ()>(store.get(&key(b"i", s.token, &s.hash)).cloned());
            let resolved = resolve(&stored, usize::MAX, read).unwrap();
            assert!(resolved.slots.len() > LISTED_FROM);
            let mut resumed = SlotBook::default();
            resumed.adopt(&resolved.slots);
            let again = checkpoint(&mut resumed, &mut store, &f(9), &c);
            assert_eq!(again.slots, stored.slots, "named again at once");
            c.flush();
            // Replaced: the list and its chunks go once the record without them is durable.
            let other = bytes(size, 9);
            checkpoint(&mut resumed, &mut store, &frame(&[&other, &[1]]), &c);
            c.flush();
            checkpoint(&mut resumed, &mut store, &frame(&[&other, &[2]]), &c);
            assert!(!store.keys().any(|k| k.ends_with(&stored.slots[0].hash)), "list deleted");
        }
        // What the record holds of the local does not grow with it (a varint may grow a byte).
        assert!(record_bytes[1] <= record_bytes[0] + 2, "{record_bytes:?}");
    }

    #[test]
    fn a_growing_local_is_named_by_the_lists_of_what_did_not_change() {
        let (c, mut store, mut book) = (Flushes::default(), HashMap::new(), SlotBook::default());
        let mut grown = bytes(300_000, 10);
        let extra = bytes(100 * 30, 11);
        let mut named = Vec::new();
        for n in 0..30 {
            grown.extend_from_slice(&extra[n * 100..(n + 1) * 100]);
            let f = frame(&[&grown, &[1]]);
            let stored = checkpoint(&mut book, &mut store, &f, &c);
            c.flush();
            assert_eq!(read_back(&stored, &store), f.locals);
            named.push(stored.slots.len());
            if n >= 15 {
                // One chunk name per 4 KiB would be some 60; the tree names what did not
                // change by a few lists, plus the path to the end.
                assert!(stored.slots.len() < 10, "{named:?}");
                assert!(
                    stored.locals.len() < 2 * MAX_CHUNK,
                    "{} bytes inline",
                    stored.locals.len()
                );
            }
        }
    }

    #[test]
    fn lists_read_back_nested_and_refuse_what_this_runtime_never_writes() {
        let (a, b, c) = (vec![b'a'; 2000], vec![b'b'; 2000], vec![b'c'; 2000]);
        let entry =
            |bytes: &[u8], len: u64| Listed { len, token: 1, hash: hash(bytes), list: false };
        let enc = |l: &[Listed]| crate::codec::encode(&l.to_vec()).unwrap();
        let inner = enc(&[entry(&a, 2000), entry(&b, 2000)]);
        let nested =
            enc(&[Listed { len: 4000, token: 1, hash: hash(&inner), list: true }, entry(&c, 2000)]);
        let mut store: HashMap<Hash, Vec<u8>> = HashMap::new();
        for v in [&a, &b, &c, &inner, &nested] {
            store.insert(hash(v), v.clone());
        }
        let top =
            |content: &[u8], len| SlotRef { at: 0, len, token: 1, hash: hash(content), list: true };
        let cases: Vec<(Vec<u8>, u64, Option<&str>)> = vec![
            (inner.clone(), 4000, None),
            (nested.clone(), 6000, None),
            (enc(&[entry(&a, 2000), entry(&b, 2001)]), 4000, Some("does not cover")),
            (vec![0xff; 3], 4000, Some("does not decode")),
            (enc(&[entry(&a, 2000)]), 2000, Some("names 1 entries")),
            (enc(&[entry(&a, 0), entry(&a, 2000), entry(&b, 2000)]), 4000, Some("names 3 entries")),
        ];
        for (content, len, why) in cases {
            store.insert(hash(&content), content.clone());
            let f = Frame { slots: vec![top(&content, len)], locals: b"z".to_vec(), ..frame(&[]) };
            let read = |s: &SlotRef| Ok::<_, ()>(store.get(&s.hash).cloned());
            match (resolve(&f, 100_000, read), why) {
                (Ok(r), None) => {
                    let whole: Vec<u8> = [&a[..], &b[..], &c[..]].concat();
                    assert_eq!(
                        r.locals[..r.locals.len() - 1],
                        whole[..usize::try_from(len).unwrap()]
                    );
                    assert_eq!(r.locals.last(), Some(&b'z'));
                    assert!(r.slots.iter().any(|s| !s.list), "the chunks read are reported");
                }
                (Err(Unresolved::Damaged(m)), Some(why)) => assert!(m.contains(why), "{m}"),
                (other, _) => panic!("{why:?}: {:?}", other.map(|r| r.locals.len())),
            }
        }
    }
}
