//! A PostgreSQL [`Store`] for durable: several processes (workers on several machines) run the
//! instances of one database.
//!
//! ```no_run
//! use std::sync::Arc;
//! use durable_postgres::PgStore;
//!
//! # fn main() -> Result<(), durable_runtime::store::StoreError> {
//! // Tables in schema `durable`, created (or migrated) on connect.
//! let store = Arc::new(PgStore::connect("host=/run/postgresql user=app dbname=app")?);
//! // `durable::Runtime::builder(dir).store(store).orchestration(...).open().await`
//! # drop(store);
//! # Ok(())
//! # }
//! ```
//!
//! # Blocking
//!
//! The [`Store`] trait is synchronous and the runtime calls it from inside tokio tasks, on
//! multi-thread and current-thread runtimes alike. A `PgStore` therefore owns a small tokio
//! runtime of its own, on one dedicated thread, which holds the connection pool and the
//! notification listener. Each [`Store`] method sends its work there and blocks the calling
//! thread on a standard channel until the database answered: **one round trip blocks the
//! calling thread** (over a local Unix socket, measured by `tests/measure.rs`: about 0.25 ms for
//! a read, 0.8 ms for a write with PostgreSQL's durable defaults). Nothing calls
//! `block_on` on the caller's runtime, so there is no panic inside a runtime and no deadlock on a
//! current-thread one.
//!
//! # Durability
//!
//! Every write commits its own transaction before it returns, so [`Store::flush`] has nothing
//! left to do and returns `Ok`. A write is durable once its `COMMIT` returned, which holds
//! with PostgreSQL's defaults `synchronous_commit = on` and `fsync = on` (and
//! `full_page_writes = on` against torn pages); with `synchronous_commit = off` the last
//! fraction of a second of acknowledged writes can be lost in a server crash. A connection
//! that breaks while a write is in flight reports [`StoreError::Io`], and the write may or may
//! not have committed; the record's version tells which (a conditional write that did commit
//! makes the same write again a [`WriteError::Conflict`]).
//!
//! # Several processes
//!
//! [`Store::shared`] is `true`. Conditional writes compare the record's version and the
//! writer's lease token in the same `UPDATE` that writes, so of two processes writing one
//! version exactly one wins and a worker whose lease was taken over cannot write.
//! [`claim`](Store::claim) locks candidates with `FOR NO KEY UPDATE SKIP LOCKED`, so two
//! claimers never get the same instance; [`claim_ids`](Store::claim_ids) (the instances
//! another process announced) and [`renew`](Store::renew) lock their rows in id order and wait
//! for a held one, so neither skips work nor deadlocks with the other. Lease times are the callers' clocks (milliseconds),
//! as the trait defines them: the workers' clocks must agree to within the lease margins.
//!
//! [`Store::watch`] listens on a dedicated connection (`LISTEN`, channel `<schema>_changes`).
//! Every write that changes an instance (`create`, `write`, `append`, `remove`, `hand_over`, and
//! a `put`, `put_new` or `delete` in [`Space::Instances`]) sends a notification in its own
//! transaction, so it is delivered when, and only if, the write commits. The payload is the
//! writing store's random name and the instance id; a store ignores its own notifications. An
//! id that cannot be a payload (8000 bytes or more, or holding NUL) is sent without it, and
//! delivered as [`Change::Missed`](durable_runtime::store::Change::Missed). When the listening
//! connection is lost, the store reconnects with backoff, listens again, and then delivers
//! [`Change::Missed`](durable_runtime::store::Change::Missed). PostgreSQL serializes the
//! commits of notifying transactions on one cluster-wide lock: under heavy concurrent writes
//! that lock, not the tables, may bound the write rate.
//!
//! # Schema
//!
//! [`PgStore::connect`] uses schema `durable`, [`PgStore::connect_in`] another one; either
//! creates the schema when it is missing and brings its tables to the current version (see
//! [`schema`]), in one transaction under an advisory lock, so processes connecting at once do
//! not race.
//!
//! # Distributed PostgreSQL-compatible databases
//!
//! CockroachDB and YugabyteDB speak PostgreSQL's protocol, but this store does not run on them
//! as it is. What its statements rely on, and what a store for them would do instead:
//!
//! | the store relies on | where | on a distributed database |
//! |---|---|---|
//! | `LISTEN`/`NOTIFY` (`pg_notify` in the writing statement) | [`Store::watch`], every write | CockroachDB has no `LISTEN` (cockroachdb/cockroach#41522). Write without `pg_notify` and do not watch: the runtime then claims every instance nobody holds at each poll, so starts and events wait up to one poll interval (see `RuntimeBuilder::poll`) |
//! | transaction-scoped advisory locks (`pg_advisory_xact_lock`, `hashtextextended`) | `append`, `append_once` (messages of one instance visible in seq order); the migration lock | CockroachDB defines them as no-ops. Draw an inbox message's seq from a counter column of its instance row (`UPDATE … SET next_seq = next_seq + 1 RETURNING`), which orders one instance's appends on its row, as every such database can; take the migration lock on a row |
//! | one global sequence for lease tokens (`nextval`) and `bigserial` inbox seqs | `claim`, `lease`; `append` | A single sequence is one hot range in CockroachDB; YugabyteDB caches sequence values per connection, so values are not in commit order. Tokens only have to grow per instance: a per-instance counter column kept on release does it |
//! | `FOR NO KEY UPDATE SKIP LOCKED` (or, ordered by id, without `SKIP LOCKED`) in a CTE, then `UPDATE … FROM` it | `claim`, `claim_abandoned`; `claim_ids`, `renew` | needs row locks with `SKIP LOCKED` (YugabyteDB has them; check the CockroachDB version); `FOR UPDATE` does as well, only with more waiting |
//! | a statement that fails with a serialization error is an [`StoreError::Io`] | every call | Both run serializable transactions that the client retries on SQLSTATE `40001`; the store should retry the statement itself, or the runtime runs the step again |
//! | a commit is durable when `COMMIT` returns | every write | holds (a commit is a consensus write), at a latency of a network round trip between replicas per step |
//!
//! Everything else is plain SQL both document: `INSERT … ON CONFLICT`, `UPDATE … RETURNING`,
//! data-modifying CTEs, partial indexes (`WHERE NOT finished`), `= ANY($1)` over arrays, foreign
//! keys with `ON DELETE CASCADE`, `greatest`. None of these replacements is built: each changes
//! the schema (a migration) and the claim, append and lease statements, and none can be tested
//! here without a cluster of that database.

#![doc(test(attr(deny(warnings))))]

mod bridge;
mod error;
mod ops;
pub mod schema;
mod sql;
mod watch;

use std::sync::Arc;

use durable_runtime::store::{
    Appended, Entries, Lease, Message, OnChange, Space, Store, StoreError, Timer, Versioned, Write,
    WriteError,
};

use self::bridge::Bridge;
use self::ops::Shared;

/// A [`Store`] in a PostgreSQL database, which several processes may share.
///
/// See the [crate documentation](crate) for how it blocks, what durability it relies on, and
/// how it tells other processes of its changes.
#[derive(Debug)]
pub struct PgStore {
    shared: Arc<Shared>,
    bridge: Bridge,
}

impl PgStore {
    /// The schema [`connect`](Self::connect) uses.
    pub const DEFAULT_SCHEMA: &'static str = "durable";

    /// Connections the store keeps open at most (besides the one it listens on).
    pub const POOL_SIZE: usize = 8;

    /// Connects to the database `conninfo` names (libpq syntax, `host=… user=… dbname=…`, or a
    /// `postgresql://` URL) and uses its schema `durable`, creating or migrating it.
    ///
    /// Fails with [`StoreError::Io`] when the database cannot be reached, the schema cannot be
    /// created, or it was made by a newer version of this crate.
    pub fn connect(conninfo: &str) -> Result<Self, StoreError> {
        Self::connect_in(conninfo, Self::DEFAULT_SCHEMA)
    }

    /// Connects as [`connect`](Self::connect) does, using schema `schema`: lowercase ASCII
    /// letters, digits and `_`, starting with a letter or `_`, at most 40 bytes. Several
    /// independent stores can share one database this way.
    pub fn connect_in(conninfo: &str, schema: &str) -> Result<Self, StoreError> {
        Self::connect_at(conninfo, schema, schema::CURRENT)
    }

    /// Connects, bringing the schema only up to `version` (never down). For testing migrations:
    /// a store on an older schema works, without what later versions add.
    #[doc(hidden)]
    pub fn connect_at(conninfo: &str, schema: &str, version: u32) -> Result<Self, StoreError> {
        schema::check_name(schema)?;
        let bridge = Bridge::start()?;
        let shared = Arc::new(Shared::new(conninfo, schema)?);
        let migrating = shared.clone();
        bridge.call(async move { migrating.migrate(version).await })?;
        Ok(Self { shared, bridge })
    }

    /// The schema the store's tables are in.
    pub fn schema(&self) -> &str {
        self.shared.schema()
    }
}

impl Store for PgStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (s, key) = (self.shared.clone(), key.to_vec());
        self.bridge.call(async move { s.get(space, key).await })
    }

    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let (s, key, value) = (self.shared.clone(), key.to_vec(), value.to_vec());
        self.bridge.call(async move { s.put(space, key, value).await })
    }

    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (s, key, value) = (self.shared.clone(), key.to_vec(), value.to_vec());
        self.bridge.call(async move { s.put_new(space, key, value).await })
    }

    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        let (s, key) = (self.shared.clone(), key.to_vec());
        self.bridge.call(async move { s.delete(space, key).await })
    }

    fn scan(
        &self,
        space: Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let (s, after) = (self.shared.clone(), after.map(<[u8]>::to_vec));
        self.bridge.call(async move { s.scan(space, after, limit).await })
    }

    /// Nothing to do: every write committed before it returned (see the
    /// [crate documentation](crate#durability)).
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn create(&self, id: &str, record: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let (s, id, record) = (self.shared.clone(), id.to_owned(), record.to_vec());
        self.bridge.call(async move { s.create(id, record).await })
    }

    fn read(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        let (s, id) = (self.shared.clone(), id.to_owned());
        self.bridge.call(async move { s.read(id).await })
    }

    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        let (s, id, write) = (self.shared.clone(), id.to_owned(), ops::OwnedWrite::from(write));
        self.bridge.call(async move { s.write(id, write).await })
    }

    fn remove(&self, id: &str, expected: u64) -> Result<(), WriteError> {
        let (s, id) = (self.shared.clone(), id.to_owned());
        self.bridge.call(async move { s.remove(id, expected).await })
    }

    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        let (s, id, body) = (self.shared.clone(), id.to_owned(), body.to_vec());
        self.bridge.call(async move { s.append(id, body).await })
    }

    fn append_once(&self, id: &str, key: &str, body: &[u8]) -> Result<Appended, StoreError> {
        let (s, id, key, body) =
            (self.shared.clone(), id.to_owned(), key.to_owned(), body.to_vec());
        self.bridge.call(async move { s.append_once(id, key, body).await })
    }

    fn delivered(&self, id: &str, key: &str) -> Result<bool, StoreError> {
        let (s, id, key) = (self.shared.clone(), id.to_owned(), key.to_owned());
        self.bridge.call(async move { s.delivered(id, key).await })
    }

    fn inbox(&self, id: &str) -> Result<Vec<Message>, StoreError> {
        let (s, id) = (self.shared.clone(), id.to_owned());
        self.bridge.call(async move { s.inbox(id).await })
    }

    fn read_with_inbox(&self, id: &str) -> Result<Option<(Versioned, Vec<Message>)>, StoreError> {
        let (s, id) = (self.shared.clone(), id.to_owned());
        self.bridge.call(async move { s.read_with_inbox(id).await })
    }

    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let (s, owner, after) = (self.shared.clone(), owner.to_owned(), after.map(str::to_owned));
        self.bridge.call(async move { s.claim(owner, now_ms, until_ms, after, limit, false).await })
    }

    fn claim_abandoned(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let (s, owner, after) = (self.shared.clone(), owner.to_owned(), after.map(str::to_owned));
        self.bridge.call(async move { s.claim(owner, now_ms, until_ms, after, limit, true).await })
    }

    fn claim_ids(
        &self,
        owner: &str,
        ids: &[String],
        now_ms: u64,
        until_ms: u64,
    ) -> Option<Result<Vec<Lease>, StoreError>> {
        if ids.is_empty() {
            return Some(Ok(Vec::new()));
        }
        let (s, owner, ids) = (self.shared.clone(), owner.to_owned(), ids.to_vec());
        Some(self.bridge.call(async move { s.claim_ids(owner, ids, now_ms, until_ms).await }))
    }

    fn lease(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let (s, id, owner) = (self.shared.clone(), id.to_owned(), owner.to_owned());
        self.bridge.call(async move { s.lease(id, owner, now_ms, until_ms).await })
    }

    fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let (s, lease) = (self.shared.clone(), lease.clone());
        self.bridge.call(async move { s.release(lease, false).await })
    }

    fn hand_over(&self, lease: &Lease) -> Result<(), StoreError> {
        let (s, lease) = (self.shared.clone(), lease.clone());
        self.bridge.call(async move { s.release(lease, true).await })
    }

    fn renew(&self, owner: &str, ids: &[String], until_ms: u64) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (s, owner, ids) = (self.shared.clone(), owner.to_owned(), ids.to_vec());
        self.bridge.call(async move { s.renew(owner, ids, until_ms).await })
    }

    fn set_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.put(Space::Timers, &sql::timer_key(timer), &[])
    }

    fn clear_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.delete(Space::Timers, &sql::timer_key(timer))
    }

    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError> {
        let s = self.shared.clone();
        self.bridge.call(async move { s.due_timers(now_ms, limit).await })
    }

    fn shared(&self) -> bool {
        true
    }

    fn keeps_slots(&self) -> bool {
        true
    }

    /// Listens on a dedicated connection; returns once `LISTEN` is in place, so every change
    /// committed after it returned is delivered (as long as the connection holds; then
    /// [`Change::Missed`](durable_runtime::store::Change::Missed)). `on_change` is called on a
    /// thread of its own, in the order the changes were committed; it may block and call the
    /// store, which only delays the changes after it.
    fn watch(&self, on_change: OnChange) -> Result<(), StoreError> {
        let s = self.shared.clone();
        let listener = self.bridge.call(async move { watch::Listener::connect(&s).await })?;
        self.bridge.spawn(listener.run(watch::deliver(on_change)?));
        Ok(())
    }
}
