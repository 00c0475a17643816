//! The instance layer of the sled store: versioned records, inboxes, leases and the timer index.
//!
//! A sled database belongs to one process, so the writers a conditional write races are threads
//! of this process: the version check and the write run under the store's write lock (sled
//! transactions cost far more than the insert of a checkpoint). A record's version is stored in
//! front of it, in the same value ([`versioned`]), so a checkpoint is one insert and a read is one
//! get that cannot pair a record with another write's version. Values written before that layout
//! keep their version in the `versions` tree until their next write. What must survive a
//! crash together does: a write that consumes inbox messages removes them in one sled
//! transaction with the record, durable together or not at all, and so does a write that
//! removes an instance's finished mark.
//!
//! The finished mark (the `finished` tree keeps ended instances out of claims) must never be
//! durable without the ended record it marks: kept alone after a power cut, it would hide an
//! unfinished instance from every claim. A write of an ended record is a plain insert, and its
//! mark waits in memory ([`Shared::marks`](super::Shared)) until a flush has made the record
//! durable; the flush then inserts it, durable with the next one. A mark lost in a crash leaves
//! an ended record unmarked: it is claimed once more, and its driver marks it. (A sled
//! transaction would keep the two together too, but rolls sled's log buffer twice: at the end of
//! every instance, that was 10–15 % of the rate of 1,000 instances × 3 steps.)
//!
//! Leases are kept in memory; a fenced write holds the lease table while it writes, so a
//! takeover cannot slip between the token check and the write.
//!
//! Over 400 lines on purpose: each operation of the instance contract on sled, next to the
//! locks and crash-order rules they share.

use std::ops::Bound;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{SledStore, lock};
use crate::store::{Appended, Lease, Message, StoreError, Timer, Versioned, Write, WriteError};

/// Key of a timer index entry: big-endian due time, then the instance id.
pub(super) fn timer_key(timer: &Timer) -> Vec<u8> {
    let mut k = timer.at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(timer.id.as_bytes());
    k
}

/// The prefix of every inbox key of `id`: the id, then NUL (instance ids contain no NUL).
fn inbox_prefix(id: &str) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.push(0);
    k
}

fn inbox_key(id: &str, seq: u64) -> Vec<u8> {
    let mut k = inbox_prefix(id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Key of a delivered-message key of `id`: the inbox prefix, then the key.
fn delivered_key(id: &str, key: &str) -> Vec<u8> {
    let mut k = inbox_prefix(id);
    k.extend_from_slice(key.as_bytes());
    k
}

fn version_of(bytes: Option<&[u8]>) -> u64 {
    bytes.and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_le_bytes)
}

/// The tag in front of a versioned value. Records begin with their own magic (`DR`) and older
/// unframed records with a bincode length, so no record written before begins with it.
const VERSIONED: [u8; 4] = [0xFF, b'D', b'V', 1];

/// An instance's stored value: [`VERSIONED`], the version (u64, little endian), the record.
pub(super) fn versioned(version: u64, record: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(12 + record.len());
    value.extend_from_slice(&VERSIONED);
    value.extend_from_slice(&version.to_le_bytes());
    value.extend_from_slice(record);
    value
}

/// The version and record of a versioned value; `None` for a value in the older layout (the
/// record alone, its version in the `versions` tree).
pub(super) fn split(value: &[u8]) -> Option<(u64, &[u8])> {
    let rest = value.strip_prefix(&VERSIONED)?;
    let (version, record) = rest.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*version), record))
}

/// The record of a stored value, whichever its layout.
pub(super) fn record_of(value: &[u8]) -> &[u8] {
    split(value).map_or(value, |(_, record)| record)
}

/// Why a write transaction was aborted.
enum Refused {
    Conflict(Option<u64>),
}

impl SledStore {
    fn tx_error<E>(
        &self,
        e: TransactionError<E>,
        abort: impl FnOnce(E) -> WriteError,
    ) -> WriteError {
        match e {
            TransactionError::Abort(a) => abort(a),
            TransactionError::Storage(e) => WriteError::Store(self.io(e)),
        }
    }

    pub(super) fn create_instance(
        &self,
        id: &str,
        record: &[u8],
    ) -> Result<Option<Versioned>, StoreError> {
        self.shared.room.claim(id.len() + record.len() + 8)?;
        let created = self.with_open(|open| {
            let _writing = lock(&self.shared.writing);
            let cas = open
                .instances
                .compare_and_swap(id, None::<&[u8]>, Some(versioned(1, record)))
                .map_err(|e| self.io(e))?;
            match cas {
                Ok(()) => Ok(None),
                Err(present) => match present.current {
                    Some(value) => self.unpack(open, id, &value).map(Some),
                    None => Ok(Some(Versioned { version: 0, record: Vec::new() })),
                },
            }
        })?;
        if created.is_none() {
            self.wrote()?;
        }
        Ok(created)
    }

    pub(super) fn read_instance(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        self.with_open(|open| {
            let Some(value) = open.instances.get(id).map_err(|e| self.io(e))? else {
                return Ok(None);
            };
            if let Some((version, record)) = split(&value) {
                return Ok(Some(Versioned { version, record: record.to_vec() }));
            }
            // The older layout: the record and its version are two values, which writers put
            // under this lock; read apart from them, a record could come with the version of
            // the write before or after it.
            let _writing = lock(&self.shared.writing);
            match open.instances.get(id).map_err(|e| self.io(e))? {
                Some(value) => self.unpack(open, id, &value).map(Some),
                None => Ok(None),
            }
        })
    }

    /// The version and record of the stored `value` of `id`; the caller holds the write lock
    /// when the value may be in the older layout.
    fn unpack(&self, open: &super::Open, id: &str, value: &[u8]) -> Result<Versioned, StoreError> {
        Ok(match split(value) {
            Some((version, record)) => Versioned { version, record: record.to_vec() },
            None => Versioned {
                version: version_of(open.versions.get(id).map_err(|e| self.io(e))?.as_deref()),
                record: value.to_vec(),
            },
        })
    }

    pub(super) fn write_instance(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        self.shared.room.claim(id.len() + write.record.len() + 8)?;
        let version = self.with_open(|open| {
            let _writing = lock(&self.shared.writing);
            // Held while writing: no takeover between the token check and the write.
            let mut leases = lock(&self.shared.leases);
            if let Some(fence) = write.fence {
                let current = leases.get(id).map(|l| l.token);
                if current != Some(fence.token) {
                    return Err(WriteError::Fenced { id: id.into(), token: fence.token, current });
                }
            }
            let conflict =
                |found| WriteError::Conflict { id: id.into(), expected: write.expected, found };
            let Some(value) = open.instances.get(id).map_err(|e| self.io(e))? else {
                return Err(conflict(None));
            };
            let (found, older) = match split(&value) {
                Some((version, _)) => (version, false),
                None => {
                    (version_of(open.versions.get(id).map_err(|e| self.io(e))?.as_deref()), true)
                }
            };
            if found != write.expected {
                return Err(conflict(Some(found)));
            }
            let next = found + 1;
            if !write.finished {
                // A mark still waiting for its flush goes before the record that is no longer
                // ended (a flush inserts marks under `writing`, never in the middle of a write).
                lock(&self.shared.marks).remove(id);
            }
            let unfinish =
                !write.finished && open.finished.contains_key(id).map_err(|e| self.io(e))?;
            let value = versioned(next, write.record);
            if write.consumed.is_empty() && !unfinish {
                open.instances.insert(id, value).map_err(|e| self.io(e))?;
            } else {
                // One sled transaction, which a crash or a power cut keeps whole: an inbox
                // message is gone only with the record that took it, and a finished mark goes
                // only with the record that is no longer ended. Written apart, a power cut could
                // keep the later write of the two and lose the earlier (the disk writes back what
                // sled has not synced yet in any order).
                (&open.instances, &open.inbox, &open.finished)
                    .transaction(|(instances, inbox, finished)| {
                        instances.insert(id.as_bytes(), value.as_slice())?;
                        for seq in write.consumed {
                            inbox.remove(inbox_key(id, *seq))?;
                        }
                        if unfinish {
                            finished.remove(id.as_bytes())?;
                        }
                        Ok(())
                    })
                    .map_err(|e: TransactionError<()>| {
                        self.tx_error(e, |()| WriteError::Store(StoreError::Io("aborted".into())))
                    })?;
            }
            if older {
                // Its version now lives in the value.
                open.versions.remove(id).map_err(|e| self.io(e))?;
            }
            if write.finished {
                // Written: the mark waits for a flush to make this record durable.
                let n = self.shared.mark_seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                lock(&self.shared.marks).insert(id.to_owned(), n);
            }
            if let Some(fence) = write.fence
                && let Some(lease) = leases.get_mut(id)
            {
                lease.expires_ms = lease.expires_ms.max(fence.until_ms);
            }
            Ok(next)
        })?;
        self.wrote()?;
        Ok(version)
    }

    pub(super) fn remove_instance(&self, id: &str, expected: u64) -> Result<(), WriteError> {
        self.with_open(|open| {
            // Lock order everywhere: the open database, then `writing`, then the leases.
            let _writing = lock(&self.shared.writing);
            lock(&self.shared.marks).remove(id);
            (&open.instances, &open.versions, &open.finished)
                .transaction(|(instances, versions, finished)| {
                    let Some(value) = instances.get(id)? else {
                        return Err(ConflictableTransactionError::Abort(Refused::Conflict(None)));
                    };
                    let found = match split(&value) {
                        Some((version, _)) => version,
                        None => version_of(versions.get(id)?.as_deref()),
                    };
                    if found != expected {
                        return Err(ConflictableTransactionError::Abort(Refused::Conflict(Some(
                            found,
                        ))));
                    }
                    instances.remove(id.as_bytes())?;
                    versions.remove(id.as_bytes())?;
                    finished.remove(id.as_bytes())?;
                    Ok(())
                })
                .map_err(|e| {
                    self.tx_error(e, |Refused::Conflict(found)| WriteError::Conflict {
                        id: id.into(),
                        expected,
                        found,
                    })
                })
        })?;
        // No append succeeds once the record is gone: what is left of the inbox goes for good,
        // and so do the keys of the messages delivered to it.
        self.with_open(|open| {
            for tree in [&open.inbox, &open.delivered] {
                for item in tree.scan_prefix(inbox_prefix(id)) {
                    let (key, _) = item.map_err(|e| self.io(e))?;
                    tree.remove(key).map_err(|e| self.io(e))?;
                }
            }
            Ok::<_, StoreError>(())
        })?;
        lock(&self.shared.leases).remove(id);
        self.wrote()?;
        Ok(())
    }

    pub(super) fn append_message(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        self.shared.room.claim(id.len() + body.len() + 9)?;
        let seq = self.with_open(|open| {
            // Under the write lock: a remove cannot slip between the check and the insert.
            let _writing = lock(&self.shared.writing);
            if !open.instances.contains_key(id).map_err(|e| self.io(e))? {
                return Ok(None);
            }
            // Monotonic across restarts (sled persists the generator ahead of use).
            let seq = open.db.generate_id().map_err(|e| self.io(e))?;
            open.inbox.insert(inbox_key(id, seq), body).map_err(|e| self.io(e))?;
            Ok::<_, StoreError>(Some(seq))
        })?;
        if seq.is_some() {
            self.wrote()?;
        }
        Ok(seq)
    }

    pub(super) fn append_message_once(
        &self,
        id: &str,
        key: &str,
        body: &[u8],
    ) -> Result<Appended, StoreError> {
        self.shared.room.claim(2 * id.len() + key.len() + body.len() + 10)?;
        let appended = self.with_open(|open| {
            // Under the write lock: neither a remove nor an append with the same key can slip
            // between the checks and the inserts.
            let _writing = lock(&self.shared.writing);
            if !open.instances.contains_key(id).map_err(|e| self.io(e))? {
                return Ok(Appended::NoInstance);
            }
            let mark = delivered_key(id, key);
            if open.delivered.contains_key(&mark).map_err(|e| self.io(e))? {
                return Ok(Appended::Duplicate);
            }
            let seq = open.db.generate_id().map_err(|e| self.io(e))?;
            // The key and the message are durable together or not at all.
            (&open.inbox, &open.delivered)
                .transaction(|(inbox, delivered)| {
                    inbox.insert(inbox_key(id, seq), body)?;
                    delivered.insert(mark.as_slice(), &[])?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => self.io(e),
                    TransactionError::Abort(()) => StoreError::Io("aborted".into()),
                })?;
            Ok::<_, StoreError>(Appended::New(seq))
        })?;
        if matches!(appended, Appended::New(_)) {
            self.wrote()?;
        }
        Ok(appended)
    }

    pub(super) fn was_delivered(&self, id: &str, key: &str) -> Result<bool, StoreError> {
        self.with_open(|open| {
            open.delivered.contains_key(delivered_key(id, key)).map_err(|e| self.io(e))
        })
    }

    pub(super) fn messages(&self, id: &str) -> Result<Vec<Message>, StoreError> {
        let prefix = inbox_prefix(id);
        self.with_open(|open| {
            let mut out = Vec::new();
            for item in open.inbox.scan_prefix(&prefix) {
                let (key, body) = item.map_err(|e| self.io(e))?;
                let Some(seq) = key.get(prefix.len()..).and_then(|s| <[u8; 8]>::try_from(s).ok())
                else {
                    continue;
                };
                out.push(Message { seq: u64::from_be_bytes(seq), body: body.to_vec() });
            }
            Ok(out)
        })
    }

    /// Grants `owner` the lease of `id` when it is free, expired or its own; under the lease
    /// table's lock.
    fn grant(
        &self,
        leases: &mut std::collections::HashMap<String, Lease>,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Option<Lease> {
        if let Some(held) = leases.get_mut(id)
            && held.expires_ms > now_ms
        {
            if held.owner != owner {
                return None;
            }
            // Its holder claims it again: the same lease, extended (its writer stays valid).
            held.expires_ms = held.expires_ms.max(until_ms);
            return Some(held.clone());
        }
        let token = self.shared.tokens.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let lease =
            Lease { id: id.to_owned(), owner: owner.to_owned(), token, expires_ms: until_ms };
        leases.insert(id.to_owned(), lease.clone());
        Some(lease)
    }

    /// Puts into the `finished` tree the marks `due` (taken before a flush that then made
    /// their ended records durable) that no write has changed since.
    pub(super) fn set_marks(
        &self,
        open: &super::Open,
        due: &[(String, u64)],
    ) -> Result<(), StoreError> {
        if due.is_empty() {
            return Ok(());
        }
        let _writing = lock(&self.shared.writing);
        let mut marks = lock(&self.shared.marks);
        for (id, n) in due {
            if marks.get(id) == Some(n) {
                open.finished.insert(id.as_bytes(), &[][..]).map_err(|e| self.io(e))?;
                marks.remove(id);
            }
        }
        Ok(())
    }

    pub(super) fn claim_unfinished(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let lower = match after {
            Some(k) => Bound::Excluded(k.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        self.with_open(|open| {
            for item in open.instances.range::<Vec<u8>, _>((lower, Bound::Unbounded)) {
                if out.len() >= limit {
                    break;
                }
                let (key, _) = item.map_err(|e| self.io(e))?;
                let id = String::from_utf8_lossy(&key);
                if open.finished.contains_key(&key).map_err(|e| self.io(e))?
                    || lock(&self.shared.marks).contains_key(id.as_ref())
                {
                    continue;
                }
                let mut leases = lock(&self.shared.leases);
                // A live lease is not claimed, not even by its owner (see `Store::claim`).
                if leases.get(id.as_ref()).is_some_and(|l| l.expires_ms > now_ms) {
                    continue;
                }
                if let Some(lease) = self.grant(&mut leases, &id, owner, now_ms, until_ms) {
                    out.push(lease);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The expired leases, in id order after `after`, taken anew: found in the lease table,
    /// not by reading every instance.
    pub(super) fn take_expired(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let mut expired: Vec<String> = lock(&self.shared.leases)
            .values()
            .filter(|l| l.expires_ms <= now_ms && after.is_none_or(|a| l.id.as_str() > a))
            .map(|l| l.id.clone())
            .collect();
        expired.sort_unstable();
        let mut out = Vec::new();
        for id in expired {
            if out.len() >= limit {
                break;
            }
            let unfinished = self.with_open(|open| {
                Ok(open.instances.contains_key(&id).map_err(|e| self.io(e))?
                    && !open.finished.contains_key(&id).map_err(|e| self.io(e))?
                    && !lock(&self.shared.marks).contains_key(&id))
            })?;
            if !unfinished {
                continue;
            }
            let mut leases = lock(&self.shared.leases);
            // Still expired: nobody took it since the table was read.
            if leases.get(&id).is_some_and(|l| l.expires_ms <= now_ms)
                && let Some(lease) = self.grant(&mut leases, &id, owner, now_ms, until_ms)
            {
                out.push(lease);
            }
        }
        Ok(out)
    }

    /// The unfinished instances among `ids` that no live lease holds, leased anew.
    pub(super) fn claim_free(
        &self,
        owner: &str,
        ids: &[String],
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<Lease>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            let unfinished = self.with_open(|open| {
                Ok(open.instances.contains_key(id).map_err(|e| self.io(e))?
                    && !open.finished.contains_key(id).map_err(|e| self.io(e))?
                    && !lock(&self.shared.marks).contains_key(id))
            })?;
            let mut leases = lock(&self.shared.leases);
            if unfinished
                && leases.get(id).is_none_or(|l| l.expires_ms <= now_ms)
                && let Some(lease) = self.grant(&mut leases, id, owner, now_ms, until_ms)
            {
                out.push(lease);
            }
        }
        Ok(out)
    }

    pub(super) fn lease_one(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let exists =
            self.with_open(|open| open.instances.contains_key(id).map_err(|e| self.io(e)))?;
        if !exists {
            return Ok(None);
        }
        let mut leases = lock(&self.shared.leases);
        Ok(self.grant(&mut leases, id, owner, now_ms, until_ms))
    }

    pub(super) fn due(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError> {
        self.with_open(|open| {
            let mut due = Vec::new();
            for item in open.timers.iter() {
                let (key, _) = item.map_err(|e| self.io(e))?;
                let Some((at, id)) = key.split_first_chunk::<8>() else { continue };
                let at_ms = u64::from_be_bytes(*at);
                if at_ms > now_ms {
                    return Ok((due, Some(at_ms)));
                }
                if due.len() >= limit {
                    break;
                }
                due.push(Timer { at_ms, id: String::from_utf8_lossy(id).into_owned() });
            }
            Ok((due, None))
        })
    }
}
