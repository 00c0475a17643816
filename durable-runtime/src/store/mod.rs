//! Where instances live: the [`Store`] trait and its embedded default, [`SledStore`].
//!
//! The runtime keeps one record per instance under its id, so a checkpoint is a single-key write
//! and needs no transaction. Writes become durable (against a power cut, not only a killed
//! process) only at [`Store::flush`]; the runtime calls it once for a whole group of checkpoints
//! (group commit) and dispatches no command before it returns. A server database with several
//! workers would implement the same trait and add leases.

pub mod conformance;
mod sled;

pub use self::sled::SledStore;

use std::sync::Arc;

/// A store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database directory is held by another process, or by another open store (another
    /// `Runtime`) in this one; `detail` says which lock was found taken.
    #[error("database {path} is in use: {detail}")]
    Locked {
        /// The directory that could not be opened.
        path: String,
        /// What the storage engine said.
        detail: String,
    },
    /// A file of the database is damaged; `detail` says what and what to do.
    #[error("database file {file} is damaged: {detail}")]
    Damaged {
        /// The damaged file.
        file: String,
        /// What is wrong, and what to do about it.
        detail: String,
    },
    /// The disk is full (or over quota): nothing written since the last durable flush is kept.
    /// Work can go on once space is freed.
    #[error("the disk is full: {0}")]
    Full(String),
    /// Syncing to stable storage failed. What the operating system still caches can no longer
    /// be trusted to be on disk, so the store refuses all work until the process restarts and
    /// reads the database from disk again.
    #[error("the store stopped after a failed sync and accepts no work until restarted: {0}")]
    Failed(String),
    /// Any other storage failure.
    #[error("storage error: {0}")]
    Io(String),
}

/// Keys and values returned by [`Store::scan`].
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The key spaces of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Space {
    /// One record per instance, keyed by instance id.
    Instances,
    /// Timer index: big-endian due time in milliseconds, then the instance id.
    Timers,
}

/// Durable key-value storage for instances. Implementations must make every write that returned
/// before a [`flush`](Store::flush) started durable when that flush returns.
pub trait Store: Send + Sync + 'static {
    /// Reads one value.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes one value atomically (not yet durable).
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Writes `value` only if `key` is absent; returns the present value otherwise.
    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes one value (not yet durable).
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError>;
    /// Every key and value of a space, in key order, starting after `after` when given, at most
    /// `limit` entries.
    fn scan(&self, space: Space, after: Option<&[u8]>, limit: usize)
    -> Result<Entries, StoreError>;
    /// Makes all earlier writes durable.
    ///
    /// When it fails, writes made since the last successful flush may be lost; the runtime calls
    /// [`recover`](Store::recover) before it writes again.
    fn flush(&self) -> Result<(), StoreError>;
    /// Brings the store back to its durable state after a failed [`flush`](Store::flush): what
    /// was not durable is forgotten. An error means the store cannot be used any more.
    fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(space, key)
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put(space, key, value)
    }
    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).put_new(space, key, value)
    }
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        (**self).delete(space, key)
    }
    fn scan(
        &self,
        space: Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        (**self).scan(space, after, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }
    fn recover(&self) -> Result<(), StoreError> {
        (**self).recover()
    }
}
