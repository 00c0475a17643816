//! The instance layer of the sled store: versioned records, inboxes, leases and the timer index.
//!
//! A conditional write is one sled transaction over the record, its version and its inbox, so a
//! record and the removal of the messages it consumed are durable together or not at all. Leases
//! are kept in memory (a sled database belongs to one process); a fenced write holds the lease
//! table while its transaction runs, so a takeover cannot slip between the token check and the
//! write.

use std::ops::Bound;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{SledStore, lock};
use crate::store::{Lease, Message, StoreError, Timer, Versioned, Write, WriteError};

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

fn version_of(bytes: Option<&[u8]>) -> u64 {
    bytes.and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_le_bytes)
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
            (&open.instances, &open.versions)
                .transaction(|(instances, versions)| {
                    if let Some(present) = instances.get(id)? {
                        let version = version_of(versions.get(id)?.as_deref());
                        return Ok(Some(Versioned { version, record: present.to_vec() }));
                    }
                    instances.insert(id.as_bytes(), record)?;
                    versions.insert(id.as_bytes(), &1u64.to_le_bytes())?;
                    Ok(None)
                })
                .map_err(|e: TransactionError<()>| match e {
                    TransactionError::Storage(e) => self.io(e),
                    TransactionError::Abort(()) => StoreError::Io("aborted".into()),
                })
        })?;
        if created.is_none() {
            self.wrote()?;
        }
        Ok(created)
    }

    pub(super) fn read_instance(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        self.with_open(|open| {
            let Some(record) = open.instances.get(id).map_err(|e| self.io(e))? else {
                return Ok(None);
            };
            let version = version_of(open.versions.get(id).map_err(|e| self.io(e))?.as_deref());
            Ok(Some(Versioned { version, record: record.to_vec() }))
        })
    }

    pub(super) fn write_instance(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        self.shared.room.claim(id.len() + write.record.len() + 8)?;
        // Held across the transaction: no takeover between the token check and the write.
        let mut leases = lock(&self.shared.leases);
        if let Some(fence) = write.fence {
            let current = leases.get(id).map(|l| l.token);
            if current != Some(fence.token) {
                return Err(WriteError::Fenced { id: id.into(), token: fence.token, current });
            }
        }
        let version = self.with_open(|open| {
            (&open.instances, &open.versions, &open.inbox, &open.finished)
                .transaction(|(instances, versions, inbox, finished)| {
                    if instances.get(id)?.is_none() {
                        return Err(ConflictableTransactionError::Abort(Refused::Conflict(None)));
                    }
                    let found = version_of(versions.get(id)?.as_deref());
                    if found != write.expected {
                        return Err(ConflictableTransactionError::Abort(Refused::Conflict(Some(
                            found,
                        ))));
                    }
                    let next = found + 1;
                    instances.insert(id.as_bytes(), write.record)?;
                    versions.insert(id.as_bytes(), &next.to_le_bytes())?;
                    for seq in write.consumed {
                        inbox.remove(inbox_key(id, *seq))?;
                    }
                    if write.finished {
                        finished.insert(id.as_bytes(), &[])?;
                    } else {
                        finished.remove(id.as_bytes())?;
                    }
                    Ok(next)
                })
                .map_err(|e| {
                    self.tx_error(e, |Refused::Conflict(found)| WriteError::Conflict {
                        id: id.into(),
                        expected: write.expected,
                        found,
                    })
                })
        })?;
        if let Some(fence) = write.fence
            && let Some(lease) = leases.get_mut(id)
        {
            lease.expires_ms = lease.expires_ms.max(fence.until_ms);
        }
        drop(leases);
        self.wrote()?;
        Ok(version)
    }

    pub(super) fn remove_instance(&self, id: &str, expected: u64) -> Result<(), WriteError> {
        self.with_open(|open| {
            (&open.instances, &open.versions, &open.finished)
                .transaction(|(instances, versions, finished)| {
                    if instances.get(id)?.is_none() {
                        return Err(ConflictableTransactionError::Abort(Refused::Conflict(None)));
                    }
                    let found = version_of(versions.get(id)?.as_deref());
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
        // No append succeeds once the record is gone: what is left of the inbox goes for good.
        self.with_open(|open| {
            for item in open.inbox.scan_prefix(inbox_prefix(id)) {
                let (key, _) = item.map_err(|e| self.io(e))?;
                open.inbox.remove(key).map_err(|e| self.io(e))?;
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
            (&open.instances, &open.inbox)
                .transaction(|(instances, inbox)| {
                    if instances.get(id)?.is_none() {
                        return Ok(None);
                    }
                    // Monotonic across restarts (sled persists the generator ahead of use).
                    let seq = inbox.generate_id()?;
                    inbox.insert(inbox_key(id, seq), body)?;
                    Ok(Some(seq))
                })
                .map_err(|e: TransactionError<()>| match e {
                    TransactionError::Storage(e) => self.io(e),
                    TransactionError::Abort(()) => StoreError::Io("aborted".into()),
                })
        })?;
        if seq.is_some() {
            self.wrote()?;
        }
        Ok(seq)
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
                if open.finished.contains_key(&key).map_err(|e| self.io(e))? {
                    continue;
                }
                let id = String::from_utf8_lossy(&key);
                let mut leases = lock(&self.shared.leases);
                if let Some(lease) = self.grant(&mut leases, &id, owner, now_ms, until_ms) {
                    out.push(lease);
                }
            }
            Ok(())
        })?;
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
