//! Where instances live: the [`Store`] trait and its embedded default, [`SledStore`].
//!
//! The trait has two layers. The key-value layer ([`get`](Store::get), [`put`](Store::put),
//! [`scan`](Store::scan)…) reads and writes raw values of a [`Space`]; tools and tests use it.
//! The instance layer is what the runtime uses, and what several workers sharing one database
//! need; each operation maps onto one SQL statement (or transaction) of a server database:
//!
//! | operation | sled | PostgreSQL (sketch) |
//! |---|---|---|
//! | [`create`](Store::create) | CAS on an absent key | `INSERT … ON CONFLICT DO NOTHING RETURNING` |
//! | [`write`](Store::write) | transaction over record, version, inbox | `UPDATE … WHERE version = $v` + lease check |
//! | [`append`](Store::append) | transaction: instance exists, insert message | `INSERT INTO inbox … WHERE EXISTS` |
//! | [`append_once`](Store::append_once) | transaction: instance exists, key absent, insert key and message | `INSERT INTO delivered … ON CONFLICT DO NOTHING` feeding the inbox insert |
//! | [`delivered`](Store::delivered) | read of the key | `SELECT EXISTS (… FROM delivered …)` |
//! | [`claim`](Store::claim) / [`lease`](Store::lease) | lease table in memory (one process) | `UPDATE leases … WHERE expires < now() … SKIP LOCKED` |
//! | [`due_timers`](Store::due_timers) | range scan of the timer index | `SELECT … WHERE due <= $now ORDER BY due` |
//!
//! Every instance record has a **version**, bumped by each [`write`](Store::write): a write names
//! the version it read and is refused with [`WriteError::Conflict`] when another writer got there
//! first, so no write silently overwrites another. Events and requests for an instance are
//! **appended** to its inbox (a raise costs its own size, not a rewrite of the record); the
//! instance's writer drains them, removing the messages it used in the same atomic write that
//! records their effect. A worker runs an instance under a **lease** with a fencing token; a
//! write fenced with a token that is no longer the instance's is refused with
//! [`WriteError::Fenced`], so a worker whose lease expired and was taken over cannot write.
//!
//! Writes become durable (against a power cut, not only a killed process) only at
//! [`Store::flush`]; the runtime calls it once for a whole group of writes (group commit) and
//! dispatches no command before it returns.
//!
//! Over 400 lines on purpose: the contract's documentation is most of it, and the forwarding
//! impl for `Arc<S>` has to repeat every method.

pub mod conformance;
mod layer;
mod sled;

pub use self::layer::Layer;
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
    /// Chunks of frames stored apart from their records: the instance id, `0xff`, the writer's
    /// lease token (big-endian) and the chunk's hash. Written before any record names them.
    Slots,
}

/// An instance record as stored, with the version a conditional [`write`](Store::write) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Bumped by every write; 0 for a record no [`create`](Store::create) or
    /// [`write`](Store::write) has versioned (one written with [`put`](Store::put)).
    pub version: u64,
    /// The record's bytes.
    pub record: Vec<u8>,
}

/// What [`Store::append_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Appended {
    /// The message was appended with this seq.
    New(u64),
    /// A message with the same key was appended to this instance before: nothing was appended.
    Duplicate,
    /// There is no such instance.
    NoInstance,
}

/// A message in an instance's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its position: messages of an instance are returned in increasing `seq`, which is the order
    /// their appends returned in.
    pub seq: u64,
    /// The message's bytes.
    pub body: Vec<u8>,
}

/// The right to run an instance until `expires_ms`, and the fencing token that proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The instance.
    pub id: String,
    /// Who holds it.
    pub owner: String,
    /// Greater than the token of every earlier lease of the instance.
    pub token: u64,
    /// When it runs out (milliseconds, the runtime's clock); another owner may take it then.
    pub expires_ms: u64,
}

/// The fencing of a [`write`](Store::write): the writer's lease token, and how long a successful
/// write extends that lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The token of the writer's lease.
    pub token: u64,
    /// The lease's new expiry.
    pub until_ms: u64,
}

/// A conditional write of an instance record: see [`Store::write`].
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The version the writer read.
    pub expected: u64,
    /// The new record.
    pub record: &'a [u8],
    /// The writer's lease, when it writes as the instance's runner (a client does not).
    pub fence: Option<Fence>,
    /// Inbox messages whose effect this record holds: removed in the same atomic write.
    pub consumed: &'a [u64],
    /// Whether the instance has ended: a finished instance is never [claimed](Store::claim).
    pub finished: bool,
}

/// A timer index entry: instance `id` wants to be woken at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// When (milliseconds, the runtime's clock).
    pub at_ms: u64,
    /// The instance.
    pub id: String,
}

/// What a store tells the runtime through [`Store::watch`] about changes other processes made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Instance `id` was created or changed, or a message was appended to its inbox: a worker
    /// may have work for it, and a client waiting for it may look again.
    Instance(String),
    /// Instance `id` was checkpointed by the worker that runs it (a write under its lease):
    /// that worker goes on with it, so others have nothing to run, but clients waiting for the
    /// instance may look again.
    Stepped(String),
    /// Changes may have been missed (the store lost its notification channel and got it back):
    /// look at everything again.
    Missed,
}

/// Called by a store with each [`Change`] another process made; see [`Store::watch`].
pub type OnChange = Arc<dyn Fn(Change) + Send + Sync>;

/// A conditional write was refused, or the store failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Another writer changed (or removed) the record since the version this write names: read
    /// it again and decide anew.
    #[error("instance `{id}` changed meanwhile (expected version {expected}, found {found:?})")]
    Conflict {
        /// The instance.
        id: String,
        /// The version the write named.
        expected: u64,
        /// The version found; `None` when the record is gone.
        found: Option<u64>,
    },
    /// The write's lease token is not the instance's current one: its lease expired and another
    /// owner took the instance over.
    #[error("instance `{id}`: lease token {token} is stale (the current token is {current:?})")]
    Fenced {
        /// The instance.
        id: String,
        /// The write's token.
        token: u64,
        /// The current token, if the instance has a lease.
        current: Option<u64>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Durable storage for instances. Implementations must make every write that returned
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

    // ----- instances -----

    /// Writes a new instance record (version 1) unless `id` exists; returns the present record
    /// otherwise, untouched.
    fn create(&self, id: &str, record: &[u8]) -> Result<Option<Versioned>, StoreError>;
    /// Reads an instance record and its version.
    fn read(&self, id: &str) -> Result<Option<Versioned>, StoreError>;
    /// Replaces an instance record if its version is still `write.expected` and, for a fenced
    /// write, the fence's token is the instance's current lease token (then the lease is
    /// extended to the fence's `until_ms`); removes the consumed inbox messages; returns the
    /// new version. All of it or nothing, atomically. Not yet durable.
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError>;
    /// Removes an instance whose version is still `expected`: its record, inbox and lease.
    fn remove(&self, id: &str, expected: u64) -> Result<(), WriteError>;
    /// Appends a message to the inbox of instance `id`; its seq, or `None` when there is no such
    /// instance. Does not touch the record. Not yet durable.
    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError>;
    /// Appends a message to the inbox of instance `id` unless a message with the same `key` was
    /// appended to it before, while this record existed: the key is kept after the message is
    /// consumed, until the instance is [removed](Store::remove). The check, the key and the
    /// message are one atomic write, so of two racing appends with one key exactly one lands.
    /// Not yet durable.
    ///
    /// The runtime appends the events an orchestration sends (`ctx.send_event`) this way, keyed
    /// by the sending operation: a sender that crashed after its append and runs the operation
    /// again delivers nothing the second time.
    fn append_once(&self, id: &str, key: &str, body: &[u8]) -> Result<Appended, StoreError>;
    /// Whether a message with `key` was [appended once](Store::append_once) to instance `id`
    /// (consumed or not); `false` when there is no such instance.
    fn delivered(&self, id: &str, key: &str) -> Result<bool, StoreError>;
    /// The inbox of instance `id`, oldest first.
    fn inbox(&self, id: &str) -> Result<Vec<Message>, StoreError>;
    /// The record of `id` and its inbox (`None` when there is no such instance), what a driver
    /// reads before each step. Not one snapshot: a message appended in between may be in the
    /// inbox read after the record. By default [`read`](Store::read), then
    /// [`inbox`](Store::inbox); a store on a server overrides it to save a round trip.
    fn read_with_inbox(&self, id: &str) -> Result<Option<(Versioned, Vec<Message>)>, StoreError> {
        let Some(read) = self.read(id)? else { return Ok(None) };
        Ok(Some((read, self.inbox(id)?)))
    }

    // ----- leases -----

    /// Claims up to `limit` unfinished instances (ids after `after`, in id order) for `owner`
    /// until `until_ms`: those with no lease or a lease that expired by `now_ms` get a new lease
    /// with a new token. A live lease is skipped, also when `owner` holds it: the owner's
    /// driver runs that instance and may give the lease back at any moment (by its token), so
    /// a claim that returned it could not promise that the lease is still held.
    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError>;
    /// Claims, as [`claim`](Store::claim) does, only the unfinished instances whose lease ran
    /// out by `now_ms` while held: abandoned by a worker that died or stalled. What a worker
    /// polls for; instances nobody holds are left alone (a change to them is announced through
    /// [`watch`](Store::watch), and [`claim`](Store::claim) finds them when it was not). Each
    /// gets a new lease with a new token. By default [`claim`](Store::claim), which takes more.
    fn claim_abandoned(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.claim(owner, now_ms, until_ms, after, limit)
    }
    /// Claims, as [`claim`](Store::claim) does, the unfinished instances among `ids` that no
    /// live lease holds (not even `owner`'s): each gets a new lease with a new token. What a
    /// worker calls for the instances other processes announced changes of: one call for a
    /// burst of announcements, so that several workers woken by the same start do not each
    /// take a lease per instance. `None` (the default): the store cannot, and the runtime takes
    /// each instance's lease with [`lease`](Store::lease) instead.
    fn claim_ids(
        &self,
        owner: &str,
        ids: &[String],
        now_ms: u64,
        until_ms: u64,
    ) -> Option<Result<Vec<Lease>, StoreError>> {
        let _ = (owner, ids, now_ms, until_ms);
        None
    }
    /// Takes the lease on instance `id`, finished or not: a new lease with a new token when
    /// nobody holds it or its lease expired by `now_ms`; the lease `owner` holds, extended with
    /// its token; `None` when it does not exist or another owner's lease has not expired.
    fn lease(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError>;
    /// Gives a lease back (no-op when its token is not current any more). Other processes are
    /// not told: the instance waits (or ended), and what wakes it (an event, a timer, a client)
    /// is announced on its own. Announcing the release made every other worker take the lease,
    /// read the instance and give it back, announcing that in turn, without end.
    fn release(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Gives a lease back, as [`release`](Store::release) does, and tells the other processes
    /// that the instance has work one of them may take now: this process stops (it shuts down)
    /// or cannot run it (its orchestration or version is not registered here). By default
    /// [`release`](Store::release).
    fn hand_over(&self, lease: &Lease) -> Result<(), StoreError> {
        self.release(lease)
    }
    /// Extends to `until_ms` every lease that `owner` still holds among `ids`, expired or not,
    /// keeping its token; never takes a lease. Returns the ids it extended; an id missing is
    /// not `owner`'s any more (released, taken over, removed). What a worker process calls for
    /// the instances it runs, a few times per lease. By default extends nothing (each driver
    /// then renews its own lease while its activities run, and with every write).
    fn renew(&self, owner: &str, ids: &[String], until_ms: u64) -> Result<Vec<String>, StoreError> {
        let _ = (owner, ids, until_ms);
        Ok(Vec::new())
    }

    // ----- timers -----

    /// Adds a timer index entry. Not yet durable.
    fn set_timer(&self, timer: &Timer) -> Result<(), StoreError>;
    /// Removes a timer index entry (no-op when absent). Not yet durable.
    fn clear_timer(&self, timer: &Timer) -> Result<(), StoreError>;
    /// Up to `limit` entries due at `now_ms`, earliest first, and the due time of the earliest
    /// entry not yet due.
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError>;

    // ----- several processes -----

    /// Whether other processes may use the database at the same time (a server database). The
    /// runtime then also polls: it claims instances whose lease expired and looks for due
    /// timers at a bounded interval, whatever [`watch`](Store::watch) delivers. `false` (the
    /// default) for a store one process owns, like [`SledStore`].
    fn shared(&self) -> bool {
        false
    }

    /// Whether the store keeps [`Space::Slots`] (frame chunks stored apart from their records,
    /// so a checkpoint writes what changed). `false`, the default: every record holds its whole
    /// frame, as before the space existed (a store written before it need not know it).
    fn keeps_slots(&self) -> bool {
        false
    }

    /// Asks to be told, through `on_change`, of the changes other processes make (a store of
    /// one process has none to tell: the default does nothing). Called once, when the runtime
    /// opens. Delivery makes work start sooner, and is not the only way it is found: a store
    /// may coalesce changes, and says [`Change::Missed`] when it lost some. A worker then
    /// claims every unfinished instance nobody holds; otherwise it does so only every 30th
    /// poll (see `RuntimeBuilder::poll`), so a change lost without a `Missed` is found late. A
    /// store that cannot tell changes leaves `on_change` (the default drops it): the runtime
    /// then claims every unheld instance at every poll.
    fn watch(&self, on_change: OnChange) -> Result<(), StoreError> {
        drop(on_change);
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
    fn create(&self, id: &str, record: &[u8]) -> Result<Option<Versioned>, StoreError> {
        (**self).create(id, record)
    }
    fn read(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        (**self).read(id)
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        (**self).write(id, write)
    }
    fn remove(&self, id: &str, expected: u64) -> Result<(), WriteError> {
        (**self).remove(id, expected)
    }
    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        (**self).append(id, body)
    }
    fn append_once(&self, id: &str, key: &str, body: &[u8]) -> Result<Appended, StoreError> {
        (**self).append_once(id, key, body)
    }
    fn delivered(&self, id: &str, key: &str) -> Result<bool, StoreError> {
        (**self).delivered(id, key)
    }
    fn inbox(&self, id: &str) -> Result<Vec<Message>, StoreError> {
        (**self).inbox(id)
    }
    fn read_with_inbox(&self, id: &str) -> Result<Option<(Versioned, Vec<Message>)>, StoreError> {
        (**self).read_with_inbox(id)
    }
    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        (**self).claim(owner, now_ms, until_ms, after, limit)
    }
    fn claim_abandoned(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        (**self).claim_abandoned(owner, now_ms, until_ms, after, limit)
    }
    fn claim_ids(
        &self,
        owner: &str,
        ids: &[String],
        now_ms: u64,
        until_ms: u64,
    ) -> Option<Result<Vec<Lease>, StoreError>> {
        (**self).claim_ids(owner, ids, now_ms, until_ms)
    }
    fn lease(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        (**self).lease(id, owner, now_ms, until_ms)
    }
    fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        (**self).release(lease)
    }
    fn hand_over(&self, lease: &Lease) -> Result<(), StoreError> {
        (**self).hand_over(lease)
    }
    fn renew(&self, owner: &str, ids: &[String], until_ms: u64) -> Result<Vec<String>, StoreError> {
        (**self).renew(owner, ids, until_ms)
    }
    fn set_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        (**self).set_timer(timer)
    }
    fn clear_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        (**self).clear_timer(timer)
    }
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError> {
        (**self).due_timers(now_ms, limit)
    }
    fn shared(&self) -> bool {
        (**self).shared()
    }
    fn keeps_slots(&self) -> bool {
        (**self).keeps_slots()
    }
    fn watch(&self, on_change: OnChange) -> Result<(), StoreError> {
        (**self).watch(on_change)
    }
}
