//! The one owner of instance records: the only code that calls the [`Store`] and decodes an
//! [`InstanceRecord`]. The client, the driver and the timer task go through it.
//!
//! Every write here returns once it is durable (by the runtime's [`Durability`]): it takes the
//! commit [`Epoch`] before writing and waits for the group commit after, so no caller pairs a
//! write with a flush. A write that could not be made durable returns the store's error; the
//! caller then reads again before deciding anything (a failed flush may have discarded it).
//!
//! Writes of a record are conditional on the version read ([`Store::write`]): a driver
//! checkpoint is also fenced by the driver's lease. Client changes (cancel, suspend, resume) are
//! retried on a lost race; events are appended to the instance's inbox, never written into the
//! record (but for the event a signal-with-start creates an instance with, part of its first
//! write).
//!
//! Over 400 lines on purpose: this module is the list of ways an instance record is read and
//! written, and being the only code that calls the store, keeping it in one file keeps that
//! auditable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::codec;
use crate::commit::{Epoch, GroupCommit};
use crate::error::ClientError;
use crate::ids::shown_id;
use crate::op::{ActivityFailure, ChildFailure, Command, Completion};
use crate::record::SlotRef;
use crate::record::{Frame, InboxMessage, InstanceRecord, Pending, State};
use crate::slots::{self, SlotBook, Unresolved};
use crate::status::Durability;
use crate::store::{Appended, Fence, Lease, Space, Store, StoreError, Timer, Write, WriteError};

/// How long a driver's lease lasts past its last checkpoint or renewal (runtime clock), unless
/// the builder sets another duration.
pub(crate) const LEASE_MS: u64 = 15_000;

/// Where a buffered event is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventRef {
    /// In the record's own inbox (written by builds before store inboxes, or with the record by a
    /// signal-with-start), by its seq.
    Record(u64),
    /// In the store's inbox of the instance, by its seq.
    Inbox(u64),
}

/// An event raised and not yet taken.
#[derive(Debug, Clone)]
pub(crate) struct Buffered {
    pub at: EventRef,
    pub name: String,
    pub payload: Vec<u8>,
}

/// An instance as read: its record, the version a write must name, and its buffered events,
/// oldest first.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub rec: InstanceRecord,
    pub version: u64,
    pub events: Vec<Buffered>,
}

impl Instance {
    /// The instance a write of `rec` over this one left at `version`, having consumed the
    /// inbox messages `consumed`: what reading it again would give, unless something else
    /// changed it since (which a conditional write on `version` would find).
    pub(crate) fn written(&self, rec: InstanceRecord, version: u64, consumed: &[u64]) -> Instance {
        let mut events = record_events(&rec);
        events.extend(
            self.events
                .iter()
                .filter(|e| matches!(e.at, EventRef::Inbox(s) if !consumed.contains(&s)))
                .cloned(),
        );
        Instance { rec, version, events }
    }

    /// Bytes the buffered events take.
    pub(crate) fn events_size(&self) -> usize {
        self.events.iter().map(|e| e.payload.len() + e.name.len() + 16).sum()
    }
}

/// The events buffered in a record's own inbox.
fn record_events(rec: &InstanceRecord) -> Vec<Buffered> {
    rec.inbox
        .iter()
        .map(|e| Buffered {
            at: EventRef::Record(e.seq),
            name: e.name.clone(),
            payload: e.payload.clone(),
        })
        .collect()
}

/// A record write was refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// By the client rule the caller gave, or by the store; see the error.
    Client(ClientError),
    /// The write carried a lease token that is no longer current: the driver stops, and
    /// `drive` decides whether another worker took the instance over.
    Fenced(String),
}

impl From<ClientError> for Refused {
    fn from(e: ClientError) -> Self {
        Refused::Client(e)
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Client(ClientError::Store(e))
    }
}

/// Outcome of one conditional write.
enum Wrote {
    /// At this version.
    Done(u64),
    Conflict,
}

/// A record listed by [`Records::scan`]: its id, the record (or why it cannot be read) and the
/// number of events in its store inbox.
pub(crate) type Listed = (String, Result<InstanceRecord, String>);

/// A record as [`Records::observe`] sees it (or why it cannot be decoded), with the number of
/// events in its store inbox.
pub(crate) type Observed = (Result<InstanceRecord, String>, usize);

pub(crate) struct Records {
    store: Arc<dyn Store>,
    commit: GroupCommit,
    durability: Durability,
    /// The largest record written (at most `codec::DECODE_LIMIT`).
    pub(crate) max_record: usize,
    /// Who this runtime is, as a lease owner.
    owner: String,
    /// Whether the store keeps frame slots ([`Store::keeps_slots`]).
    slots: bool,
    /// How long a lease lasts past its last write or renewal.
    lease_ms: u64,
}

impl Records {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        durability: Durability,
        max_record: usize,
        lease_ms: u64,
    ) -> std::io::Result<Self> {
        let commit = GroupCommit::start(store.clone())?;
        // Unique across processes and machines sharing a database, and across runtimes of one
        // process: the host, the process, the store's address and the time it opened.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let opened = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let owner = format!(
            "{}-pid-{}-{:p}-{opened:x}",
            host.trim(),
            std::process::id(),
            Arc::as_ptr(&store)
        );
        let slots = store.keeps_slots();
        Ok(Records {
            store,
            commit,
            durability,
            max_record,
            owner,
            slots,
            lease_ms: lease_ms.max(1),
        })
    }

    /// How long a lease lasts past its last write or renewal.
    pub(crate) fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Whether other processes may use the store at the same time.
    pub(crate) fn shared(&self) -> bool {
        self.store.shared()
    }

    /// Asks the store to tell `on_change` of other processes' changes.
    pub(crate) fn watch(&self, on_change: crate::store::OnChange) -> Result<(), StoreError> {
        self.store.watch(on_change)
    }

    // ----- durability -----

    fn epoch(&self) -> Epoch {
        self.commit.epoch()
    }

    /// Waits until what was written since `since` is durable. An error means it may be lost.
    async fn durable(&self, since: Epoch) -> Result<(), StoreError> {
        match self.durability {
            Durability::Flush => self.commit.commit(since).await,
            Durability::Buffered => Ok(()),
        }
    }

    /// Flushes what was written (on shutdown).
    pub(crate) fn flush(&self) {
        let _ = self.store.flush();
    }

    // ----- reading -----

    fn decode(bytes: &[u8]) -> Result<InstanceRecord, String> {
        InstanceRecord::from_bytes(bytes).map_err(|e| e.to_string())
    }

    /// The record of `id` and its version; `Err` when it cannot be read or decoded.
    pub(crate) fn record(&self, id: &str) -> Result<Option<(InstanceRecord, u64)>, String> {
        let stored = self.store.read(id).map_err(|e| e.to_string())?;
        stored
            .map(|v| InstanceRecord::from_bytes(&v.record).map(|r| (r, v.version)))
            .transpose()
            .map_err(|e| e.to_string())
    }

    /// The record, version and buffered events of `id`.
    pub(crate) fn load(&self, id: &str) -> Result<Option<Instance>, String> {
        let Some((stored, inbox)) = self.store.read_with_inbox(id).map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let rec = InstanceRecord::from_bytes(&stored.record).map_err(|e| e.to_string())?;
        let version = stored.version;
        let mut events = record_events(&rec);
        for m in inbox {
            match InboxMessage::from_bytes(&m.body) {
                Ok(InboxMessage::Event { name, payload }) => {
                    events.push(Buffered { at: EventRef::Inbox(m.seq), name, payload });
                }
                Err(e) => tracing::error!(instance = %id, "unreadable inbox message skipped: {e}"),
            }
        }
        Ok(Some(Instance { rec, version, events }))
    }

    /// The record of `id`, or why it cannot be decoded.
    pub(crate) fn read(
        &self,
        id: &str,
    ) -> Result<Option<Result<InstanceRecord, String>>, StoreError> {
        Ok(self.store.read(id)?.map(|v| Self::decode(&v.record)))
    }

    /// A page of instance ids in id order, after `after` (nothing decoded).
    pub(crate) fn scan_ids(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let page = self.store.scan(Space::Instances, after.map(str::as_bytes), limit)?;
        Ok(page.into_iter().map(|(key, _)| String::from_utf8_lossy(&key).into_owned()).collect())
    }

    /// A page of records in id order, after `after`.
    pub(crate) fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let page = self.store.scan(Space::Instances, after.map(str::as_bytes), limit)?;
        Ok(page
            .into_iter()
            .map(|(key, bytes)| {
                let id = String::from_utf8_lossy(&key).into_owned();
                let rec = Self::decode(&bytes);
                (id, rec)
            })
            .collect())
    }

    /// The record of `id` (or why it cannot be decoded) and the number of events in its store
    /// inbox, as one consistent observation: the record is read again after the inbox and the
    /// pair is kept only when its version did not move in between. Read apart, a step that
    /// consumed an event could show its record from before and its inbox from after (the event
    /// neither buffered nor taken), and a client acting on that would raise it twice.
    pub(crate) fn observe(&self, id: &str) -> Result<Option<Observed>, StoreError> {
        let mut stored = self.store.read(id)?;
        loop {
            let Some(before) = stored else { return Ok(None) };
            let inbox = self.store.inbox(id)?.len();
            stored = self.store.read(id)?;
            if stored.as_ref().is_some_and(|after| after.version == before.version) {
                return Ok(Some((Self::decode(&before.record), inbox)));
            }
        }
    }

    /// The record of `id` as it is durable: a terminal record is handed out only once
    /// everything written before it was read is durable (a result must survive a crash).
    pub(crate) async fn settled(&self, id: &str) -> Result<Option<InstanceRecord>, Refused> {
        loop {
            let since = self.epoch();
            let rec = match self.record(id) {
                Ok(Some((rec, _))) => rec,
                Ok(None) => return Ok(None),
                Err(reason) => {
                    return Err(ClientError::Unreadable { id: id.into(), reason }.into());
                }
            };
            if rec.is_terminal()
                && let Err(e) = self.durable(since).await
            {
                match e {
                    // The store stopped: nothing more will become durable.
                    StoreError::Failed(_) => return Err(e.into()),
                    // What was read may be gone: read again.
                    _ => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
            return Ok(Some(rec));
        }
    }

    // ----- limits -----

    /// Encodes a record about to be written, refusing one that could not be read back: larger
    /// than the record limit (counting the events waiting in its inbox), or beyond what the
    /// decoder accepts.
    pub(crate) fn encode(
        &self,
        id: &str,
        rec: &InstanceRecord,
        inbox: (usize, usize),
    ) -> Result<Vec<u8>, ClientError> {
        self.encode_with(id, rec, rec.frame.as_ref(), rec.slotted, inbox)
    }

    /// [`encode`](Self::encode) with `frame` and `slotted` in place of the record's.
    fn encode_with(
        &self,
        id: &str,
        rec: &InstanceRecord,
        frame: Option<&Frame>,
        slotted: bool,
        inbox: (usize, usize),
    ) -> Result<Vec<u8>, ClientError> {
        let bytes = rec.to_bytes_with(frame, slotted).map_err(|e| StoreError::Io(e.to_string()))?;
        let too_large = |reason| ClientError::TooLarge { id: shown_id(id), reason };
        let total = bytes.len().saturating_add(inbox.1);
        if total > self.max_record {
            return Err(too_large(format!(
                "the record would be {total} bytes, over the limit of {} bytes ({})",
                self.max_record,
                size_breakdown(rec, inbox)
            )));
        }
        if bytes.len().saturating_mul(16) > codec::DECODE_LIMIT {
            InstanceRecord::from_bytes(&bytes).map_err(|e| {
                too_large(format!(
                    "the record of {} bytes would not decode again: {e}",
                    bytes.len()
                ))
            })?;
        }
        Ok(bytes)
    }

    /// Bytes of the record a step may fill with its frame, its command and its output: the
    /// limit less what the instance holds besides (an estimate, generous by a kilobyte).
    pub(crate) fn step_budget(&self, instance: &Instance) -> usize {
        let rec = &instance.rec;
        let held = rec.input.len()
            + instance.events_size()
            + rec.custom_status.as_ref().map_or(0, Vec::len)
            + rec.orchestration.len()
            + rec.parent.as_ref().map_or(0, String::len)
            + 1024;
        self.max_record.saturating_sub(held)
    }

    // ----- writing -----

    /// Creates the record of each new instance of `items`, in order, sharing one commit: each
    /// `Ok(None)` is durable when this returns; `Ok(Some(..))` is the record present under that
    /// id instead (made durable too: another caller may have written it an instant ago). A failed commit fails every item it would have
    /// made durable (their records may or may not survive a crash; a later start of the
    /// same id finds out).
    pub(crate) async fn create_many(
        &self,
        items: &[(&str, &InstanceRecord)],
    ) -> Vec<Result<Option<Result<InstanceRecord, String>>, ClientError>> {
        let since = self.epoch();
        let mut out: Vec<_> = items
            .iter()
            .map(|(id, rec)| {
                let bytes = self.encode(id, rec, (0, 0))?;
                let present = self.store.create(id, &bytes)?;
                Ok(present.map(|v| Self::decode(&v.record)))
            })
            .collect();
        if out.iter().any(Result::is_ok)
            && let Err(e) = self.durable(since).await
        {
            for item in out.iter_mut().filter(|r| r.is_ok()) {
                *item = Err(e.clone().into());
            }
        }
        out
    }

    fn write(
        &self,
        id: &str,
        instance: &Instance,
        rec: &InstanceRecord,
        consumed: &[u64],
        fence: Option<Fence>,
    ) -> Result<Wrote, Refused> {
        self.write_with(id, instance, rec, rec.frame.as_ref(), rec.slotted, consumed, fence)
    }

    /// [`write`](Self::write) with `frame` stored in place of the record's frame, and `slotted`
    /// in place of its flag.
    #[allow(clippy::too_many_arguments, reason = "write's arguments and the two it overrides")]
    fn write_with(
        &self,
        id: &str,
        instance: &Instance,
        rec: &InstanceRecord,
        frame: Option<&Frame>,
        slotted: bool,
        consumed: &[u64],
        fence: Option<Fence>,
    ) -> Result<Wrote, Refused> {
        let inbox = instance
            .events
            .iter()
            .filter(|e| matches!(e.at, EventRef::Inbox(s) if !consumed.contains(&s)));
        let (count, size) =
            inbox.fold((0, 0), |(n, s), e| (n + 1, s + e.payload.len() + e.name.len() + 16));
        let bytes = self.encode_with(id, rec, frame, slotted, (count, size))?;
        let write = Write {
            expected: instance.version,
            record: &bytes,
            fence,
            consumed,
            finished: rec.is_terminal(),
        };
        match self.store.write(id, &write) {
            Ok(version) => Ok(Wrote::Done(version)),
            Err(WriteError::Conflict { .. }) => Ok(Wrote::Conflict),
            Err(e @ WriteError::Fenced { .. }) => Err(Refused::Fenced(e.to_string())),
            Err(WriteError::Store(e)) => Err(e.into()),
        }
    }

    /// A driver's checkpoint of `rec` over the `instance` it read, consuming the inbox
    /// messages `consumed`, fenced by its lease; durable when it returns the version written.
    /// `Ok(None)`: the record changed meanwhile (a lost race): nothing was written.
    ///
    /// Large locals of its frame go to slots as `book` decides (see [`crate::slots`]): the
    /// slots are written before the record; slots no record names any more are deleted once
    /// that is durable, and all of them once the instance has ended.
    pub(crate) async fn checkpoint(
        &self,
        id: &str,
        instance: &Instance,
        rec: &InstanceRecord,
        consumed: &[u64],
        fence: Fence,
        book: &Mutex<SlotBook>,
    ) -> Result<Option<u64>, Refused> {
        let since = self.epoch();
        let prefix = slots::prefix(id, rec.created_ms);
        let (wrote, slotted, waiting) = {
            let mut book = book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A frame with slots is one as stored (read and kept, never run): written as it is.
            let whole = rec.frame.as_ref().filter(|f| f.slots.is_empty());
            let plan = match whole {
                Some(f)
                    if self.slots && (book.touched() || f.locals.len() >= slots::CHUNKED_FROM) =>
                {
                    for key in book.collect(&prefix, &self.commit) {
                        if let Err(e) = self.store.delete(Space::Slots, &key) {
                            tracing::warn!(instance = %id, "cannot delete a frame slot: {e}");
                        }
                    }
                    let plan = book.plan(&prefix, fence.token, f, &self.commit);
                    for (key, value) in plan.writes(&f.locals) {
                        self.store.put(Space::Slots, key, value)?;
                    }
                    if plan.writes_slots() {
                        book.slots_written(&plan, self.commit.mark(since));
                    }
                    Some(plan)
                }
                _ => None,
            };
            let stored = plan.as_ref().map_or(rec.frame.as_ref(), |p| Some(&p.stored));
            let slotted = rec.slotted || book.touched();
            let wrote =
                self.write_with(id, instance, rec, stored, slotted, consumed, Some(fence))?;
            if let Wrote::Done(_) = wrote {
                let mark = self.commit.mark(since);
                match (plan, &rec.frame) {
                    (Some(plan), _) => book.record_written(plan, mark),
                    (None, None) if book.touched() => book.record_without_frame(mark),
                    _ => {}
                }
            }
            (wrote, slotted, book.waiting())
        };
        match wrote {
            Wrote::Conflict => Ok(None),
            Wrote::Done(version) => {
                self.durable(since).await?;
                if slotted && rec.is_terminal() {
                    self.drop_slots_when_durable(&prefix, since).await;
                } else if waiting && self.durability == Durability::Buffered {
                    // Slots are named (and deleted) only after a flush: ask for one.
                    self.commit.request();
                }
                Ok(Some(version))
            }
        }
    }

    /// The frame of `id` (the incarnation created at `created_ms`) as stored, with the chunks
    /// its slots hold put back; and the slots read for it.
    pub(crate) fn resolve(
        &self,
        id: &str,
        created_ms: u64,
        frame: &Frame,
    ) -> Result<(Frame, Vec<SlotRef>), Unresolved<StoreError>> {
        let prefix = slots::prefix(id, created_ms);
        let read =
            |s: &SlotRef| self.store.get(Space::Slots, &slots::key(&prefix, s.token, &s.hash));
        let resolved = slots::resolve(frame, codec::DECODE_LIMIT, read)?;
        Ok((Frame { locals: resolved.locals, ..frame.clone_head() }, resolved.slots))
    }

    /// Deletes every frame slot whose key begins with `prefix` (an instance's incarnation) once
    /// what was written since `since` (its end, or its removal) is durable; left for a later
    /// removal when that cannot be known.
    async fn drop_slots_when_durable(&self, prefix: &[u8], since: Epoch) {
        let mut after = prefix.to_vec();
        let mut waited = self.durability == Durability::Flush;
        loop {
            let page = match self.store.scan(Space::Slots, Some(&after), 256) {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!("cannot list frame slots: {e}");
                    return;
                }
            };
            let mine: Vec<Vec<u8>> = page
                .iter()
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(prefix))
                .cloned()
                .collect();
            if !mine.is_empty() && !waited {
                // Buffered: the end (or removal) must be durable before its slots go.
                if self.commit.commit(since).await.is_err() {
                    return;
                }
                waited = true;
            }
            for key in &mine {
                if let Err(e) = self.store.delete(Space::Slots, key) {
                    tracing::warn!("cannot delete a frame slot: {e}");
                    return;
                }
            }
            match mine.last() {
                Some(last) if mine.len() == page.len() => after.clone_from(last),
                _ => return,
            }
        }
    }

    /// Reads, changes and writes the record of `id` until the write wins its race, durably.
    /// `change` returns `Ok(None)` to write nothing, `Err` to refuse; `consumed` inbox messages
    /// go with the write. `Ok(None)` also when there is no such record; `finished` states what
    /// to do with a terminal record: `Err(Finished)` for a client, skip for the driver.
    pub(crate) async fn update<T>(
        &self,
        id: &str,
        fence: Option<Fence>,
        consumed: &[u64],
        mut change: impl FnMut(&mut InstanceRecord) -> Result<Option<T>, ClientError>,
    ) -> Result<Option<T>, Refused> {
        loop {
            let since = self.epoch();
            let instance = match self.load(id) {
                Ok(Some(i)) => i,
                Ok(None) => return Ok(None),
                Err(reason) => {
                    return Err(ClientError::Unreadable { id: id.into(), reason }.into());
                }
            };
            let mut rec = instance.rec.clone();
            let Some(out) = change(&mut rec)? else { return Ok(None) };
            match self.write(id, &instance, &rec, consumed, fence)? {
                Wrote::Conflict => continue,
                Wrote::Done(_) => {
                    self.durable(since).await?;
                    if rec.slotted && rec.is_terminal() && !instance.rec.is_terminal() {
                        // Ended here (a cancellation, a failure): its slots go.
                        let prefix = slots::prefix(id, rec.created_ms);
                        self.drop_slots_when_durable(&prefix, since).await;
                    }
                    return Ok(Some(out));
                }
            }
        }
    }

    /// A client's change to an unfinished instance, durable when it returns.
    pub(crate) async fn update_live(
        &self,
        id: &str,
        mut change: impl FnMut(&mut InstanceRecord) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let done = self
            .update(id, None, &[], |rec| {
                if rec.is_terminal() {
                    return Err(ClientError::Finished {
                        id: id.into(),
                        state: crate::status::state_of(rec, true),
                    });
                }
                change(rec).map(Some)
            })
            .await
            .map_err(client_error)?;
        done.ok_or_else(|| ClientError::NotFound(id.into()))
    }

    /// Appends event `name` to the inbox of a live instance, durably; refused when the instance
    /// and its buffered events would outgrow the record limit.
    pub(crate) async fn raise(
        &self,
        id: &str,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        let body = self.event_message(id, name, payload)?;
        let since = self.epoch();
        if self.store.append(id, &body)?.is_none() {
            return Err(ClientError::NotFound(id.into()));
        }
        self.durable(since).await?;
        Ok(())
    }

    /// Delivers event `name` to the inbox of a live instance once under `key` (an event an
    /// orchestration sends; see [`Store::append_once`]), durably. `Ok` too when the key was
    /// delivered before: the sender runs the operation again after a crash, and the receiver
    /// must not get the event twice, nor the sender an error for an event that was delivered
    /// (the receiver may have taken it, or ended, since).
    pub(crate) async fn send(
        &self,
        id: &str,
        key: &str,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        let since = self.epoch();
        if !self.store.delivered(id, key)? {
            let body = self.event_message(id, name, payload)?;
            match self.store.append_once(id, key, &body)? {
                Appended::New(_) | Appended::Duplicate => {}
                Appended::NoInstance => return Err(ClientError::NotFound(id.into())),
            }
        }
        self.durable(since).await?;
        Ok(())
    }

    /// The inbox message of event `name` for instance `id`, which must be live and have room
    /// for it: refused when the instance and its buffered events would outgrow the record
    /// limit.
    fn event_message(
        &self,
        id: &str,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let instance = match self.load(id) {
            Ok(Some(i)) => i,
            Ok(None) => return Err(ClientError::NotFound(id.into())),
            Err(reason) => return Err(ClientError::Unreadable { id: id.into(), reason }),
        };
        if instance.rec.is_terminal() {
            return Err(ClientError::Finished {
                id: id.into(),
                state: crate::status::state_of(&instance.rec, true),
            });
        }
        // The record's own inbox is counted by its encoding; count the store's and this one.
        let inbox = instance.events.iter().filter(|e| matches!(e.at, EventRef::Inbox(_)));
        let (count, size) = inbox.fold((1, payload.len() + name.len() + 16), |(n, s), e| {
            (n + 1, s + e.payload.len() + e.name.len() + 16)
        });
        self.encode(id, &instance.rec, (count, size)).map_err(|e| match e {
            ClientError::TooLarge { id, reason } => ClientError::Payload {
                id,
                reason: format!("refused, nothing was stored: {reason}"),
            },
            e => e,
        })?;
        InboxMessage::Event { name: name.to_owned(), payload }
            .to_bytes()
            .map_err(|e| ClientError::Payload { id: id.into(), reason: e.to_string() })
    }

    /// Marks a terminal record written by an older build as finished, so it is not claimed.
    pub(crate) async fn mark_finished(&self, id: &str, instance: &Instance, fence: Fence) {
        let book = Mutex::default();
        if let Err(e) = self.checkpoint(id, instance, &instance.rec, &[], fence, &book).await {
            tracing::debug!(instance = %id, "cannot mark finished: {e:?}");
        }
    }

    /// Deletes a finished instance, its inbox and its timer entries, durably.
    pub(crate) async fn remove(&self, id: &str) -> Result<(), ClientError> {
        loop {
            let since = self.epoch();
            // The slots of the incarnation removed; of any, for a record that cannot say which.
            let (pending, version, prefix) = match self.record(id) {
                Ok(None) => return Err(ClientError::NotFound(id.into())),
                Ok(Some((rec, _))) if !rec.is_terminal() => {
                    return Err(ClientError::Running(id.into()));
                }
                Ok(Some((rec, v))) => (rec.pending, v, slots::prefix(id, rec.created_ms)),
                // An unreadable record can be purged.
                Err(_) => (
                    None,
                    self.store.read(id)?.map_or(0, |v| v.version),
                    slots::instance_prefix(id),
                ),
            };
            match self.store.remove(id, version) {
                Ok(()) => {}
                Err(WriteError::Conflict { found: None, .. }) => {
                    return Err(ClientError::NotFound(id.into()));
                }
                Err(WriteError::Conflict { .. }) => continue,
                Err(WriteError::Store(e)) => return Err(e.into()),
                Err(e @ WriteError::Fenced { .. }) => {
                    return Err(StoreError::Io(e.to_string()).into());
                }
            }
            if let Some(p) = &pending {
                self.clear_timers(id, p);
            }
            self.durable(since).await?;
            self.drop_slots_when_durable(&prefix, since).await;
            return Ok(());
        }
    }

    // ----- leases -----

    /// Takes the lease of `id` for this runtime.
    pub(crate) fn lease(&self, id: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        self.store.lease(id, &self.owner, now_ms, now_ms.saturating_add(self.lease_ms))
    }

    /// The fence of a write under `lease` at `now_ms`, extending it.
    pub(crate) fn fence(&self, lease: &Lease, now_ms: u64) -> Fence {
        Fence { token: lease.token, until_ms: now_ms.saturating_add(self.lease_ms) }
    }

    /// Gives `lease` back; `to_others`: tells the other workers the instance has work for them.
    pub(crate) fn release(&self, lease: &Lease, to_others: bool) {
        let released =
            if to_others { self.store.hand_over(lease) } else { self.store.release(lease) };
        if let Err(e) = released {
            tracing::warn!("cannot release a lease: {e}");
        }
    }

    /// Unfinished instances this runtime may run, a page at a time: those nobody holds or whose
    /// lease ran out, or with `abandoned_only` only the latter.
    pub(crate) fn claim(
        &self,
        now_ms: u64,
        after: Option<&str>,
        limit: usize,
        abandoned_only: bool,
    ) -> Result<Vec<Lease>, StoreError> {
        let until = now_ms.saturating_add(self.lease_ms);
        if abandoned_only {
            self.store.claim_abandoned(&self.owner, now_ms, until, after, limit)
        } else {
            self.store.claim(&self.owner, now_ms, until, after, limit)
        }
    }

    /// The unfinished instances among `ids` that no live lease holds, leased to this runtime;
    /// `None` when the store cannot claim by id.
    pub(crate) fn claim_ids(
        &self,
        ids: &[String],
        now_ms: u64,
    ) -> Option<Result<Vec<Lease>, StoreError>> {
        let until = now_ms.saturating_add(self.lease_ms);
        self.store.claim_ids(&self.owner, ids, now_ms, until)
    }

    /// Extends the leases this runtime still holds among `ids` to a lease past `now_ms`; how
    /// many.
    pub(crate) fn renew(&self, ids: &[String], now_ms: u64) -> Result<usize, StoreError> {
        let until = now_ms.saturating_add(self.lease_ms);
        Ok(self.store.renew(&self.owner, ids, until)?.len())
    }

    // ----- timers -----

    pub(crate) fn set_timer(&self, at_ms: u64, id: &str) {
        if let Err(e) = self.store.set_timer(&Timer { at_ms, id: id.to_owned() }) {
            tracing::error!("cannot index timer: {e}");
        }
    }

    /// Removes the timer index entries of a pending command that is over (its instance stepped
    /// on, ended or was purged). An entry a crash leaves behind only wakes the instance for
    /// nothing when it comes due.
    pub(crate) fn clear_timers(&self, id: &str, pending: &Pending) {
        for at_ms in timer_times(pending) {
            if let Err(e) = self.store.clear_timer(&Timer { at_ms, id: id.to_owned() }) {
                tracing::warn!("cannot remove a timer entry: {e}");
            }
        }
    }

    /// Timer entries due at `now_ms` (removed as they are returned) and the next due time.
    pub(crate) fn take_due(&self, now_ms: u64) -> (Vec<String>, Option<u64>) {
        let (due, next) = match self.store.due_timers(now_ms, 64) {
            Ok(v) => v,
            Err(e) => {
                // Looked at again in a second: a store that failed for a moment (a reopen, a
                // dropped connection) must not leave the timers asleep.
                tracing::error!("timer index unreadable, trying again in 1 s: {e}");
                return (Vec::new(), Some(now_ms.saturating_add(TIMER_RETRY_MS)));
            }
        };
        let mut ids = Vec::with_capacity(due.len());
        for timer in due {
            let _ = self.store.clear_timer(&timer);
            ids.push(timer.id);
        }
        (ids, next)
    }
}

/// How long the timer task waits before it reads a timer index that failed again.
pub(crate) const TIMER_RETRY_MS: u64 = 1000;

/// The error a client sees for a refused change.
pub(crate) fn client_error(r: Refused) -> ClientError {
    match r {
        Refused::Client(e) => e,
        Refused::Fenced(why) => ClientError::Store(StoreError::Io(why)),
    }
}

/// The times of the timer index entries `pending` may have made: its timers, event timeouts and
/// retry backoffs.
fn timer_times(pending: &Pending) -> Vec<u64> {
    let mut times = Vec::new();
    for (leaf, branch) in pending.command.leaves().iter().zip(&pending.branches) {
        match leaf {
            Command::Timer { fire_at_ms } => times.push(*fire_at_ms),
            Command::Event { timeout_at_ms: Some(t), .. } => times.push(*t),
            _ => {}
        }
        if branch.not_before_ms > 0 {
            times.push(branch.not_before_ms);
        }
    }
    times
}

/// The stored bytes of a branch's result.
pub(crate) fn completion_size(c: &Completion) -> usize {
    match c {
        Completion::Activity(Ok(b)) | Completion::Child(Ok(b)) => b.len(),
        Completion::Event { payload: Some(b), .. } => b.len(),
        Completion::Activity(Err(ActivityFailure::Error { payload, .. })) => payload.len(),
        Completion::Child(Err(ChildFailure::Failed { payload: Some(p), .. })) => p.len(),
        _ => 0,
    }
}

/// What takes the room in a record, largest first, for the message of a refused write;
/// `inbox` is the count and size of the events in the store's inbox.
fn size_breakdown(rec: &InstanceRecord, inbox: (usize, usize)) -> String {
    let mut parts: Vec<(usize, String)> = Vec::new();
    if let Some(f) = &rec.frame {
        let names: Vec<&str> = f.layout.iter().map(|(n, _)| n.as_str()).collect();
        parts.push((
            f.locals.len(),
            format!(
                "the locals at suspension point `{}` (line {}: {})",
                f.point,
                f.line,
                names.join(", ")
            ),
        ));
    }
    if let Some(p) = &rec.pending {
        let size = codec::encode(&p.command).map_or(0, |b| b.len());
        parts.push((size, format!("the command `{}`", p.command.describe())));
    }
    parts.push((rec.input.len(), "the input".into()));
    if let Some(s) = &rec.custom_status {
        parts.push((s.len(), "the custom status".into()));
    }
    let events: usize = rec.inbox.iter().map(|e| e.payload.len()).sum::<usize>() + inbox.1;
    parts.push((events, format!("{} buffered events", rec.inbox.len() + inbox.0)));
    match &rec.state {
        State::Completed { output } => parts.push((output.len(), "the output".into())),
        State::Failed { payload: Some(p), .. } => parts.push((p.len(), "the error value".into())),
        _ => {}
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{what}: {n} bytes"))
        .collect::<Vec<_>>()
        .join("; ")
}
