//! [`Layer`]: a store that wraps another and changes a few of its operations, forwarding the
//! rest (fault injection, measurement, a store that says it is shared).

use super::{
    Appended, Entries, Lease, Message, OnChange, Space, Store, StoreError, Timer, Versioned, Write,
    WriteError,
};

/// A [`Store`] made of another one: every operation forwards to [`inner`](Layer::inner) unless
/// the layer overrides it. Implement `Layer` (not `Store`) and override what the wrapper
/// changes; `Store` comes with it.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use durable_runtime::store::{Layer, SledStore, Store, StoreError};
///
/// /// Flushes fail while `failing` is set, as on a full disk.
/// struct FailingFlush {
///     inner: SledStore,
///     failing: AtomicBool,
/// }
///
/// impl Layer for FailingFlush {
///     fn inner(&self) -> &dyn Store {
///         &self.inner
///     }
///     fn flush(&self) -> Result<(), StoreError> {
///         if self.failing.load(Ordering::SeqCst) {
///             return Err(StoreError::Full("injected".into()));
///         }
///         self.inner.flush()
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("layer-doc-{}", std::process::id()));
/// let store = FailingFlush { inner: SledStore::open(&dir)?, failing: AtomicBool::new(true) };
/// // With both traits in scope, name the one meant.
/// assert!(matches!(Store::flush(&store), Err(StoreError::Full(_))));
/// store.failing.store(false, Ordering::SeqCst);
/// Store::flush(&store)?;
/// # drop(store);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[allow(missing_docs, reason = "each method is the `Store` method of the same name")]
pub trait Layer: Send + Sync + 'static {
    /// The wrapped store.
    fn inner(&self) -> &dyn Store;

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner().get(space, key)
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.inner().put(space, key, value)
    }
    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner().put_new(space, key, value)
    }
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.inner().delete(space, key)
    }
    fn scan(
        &self,
        space: Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.inner().scan(space, after, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner().flush()
    }
    fn recover(&self) -> Result<(), StoreError> {
        self.inner().recover()
    }
    fn create(&self, id: &str, record: &[u8]) -> Result<Option<Versioned>, StoreError> {
        self.inner().create(id, record)
    }
    fn read(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner().read(id)
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        self.inner().write(id, write)
    }
    fn remove(&self, id: &str, expected: u64) -> Result<(), WriteError> {
        self.inner().remove(id, expected)
    }
    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        self.inner().append(id, body)
    }
    fn append_once(&self, id: &str, key: &str, body: &[u8]) -> Result<Appended, StoreError> {
        self.inner().append_once(id, key, body)
    }
    fn delivered(&self, id: &str, key: &str) -> Result<bool, StoreError> {
        self.inner().delivered(id, key)
    }
    fn inbox(&self, id: &str) -> Result<Vec<Message>, StoreError> {
        self.inner().inbox(id)
    }
    fn read_with_inbox(&self, id: &str) -> Result<Option<(Versioned, Vec<Message>)>, StoreError> {
        self.inner().read_with_inbox(id)
    }
    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.inner().claim(owner, now_ms, until_ms, after, limit)
    }
    fn claim_abandoned(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.inner().claim_abandoned(owner, now_ms, until_ms, after, limit)
    }
    fn claim_ids(
        &self,
        owner: &str,
        ids: &[String],
        now_ms: u64,
        until_ms: u64,
    ) -> Option<Result<Vec<Lease>, StoreError>> {
        self.inner().claim_ids(owner, ids, now_ms, until_ms)
    }
    fn lease(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        self.inner().lease(id, owner, now_ms, until_ms)
    }
    fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner().release(lease)
    }
    fn hand_over(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner().hand_over(lease)
    }
    fn renew(&self, owner: &str, ids: &[String], until_ms: u64) -> Result<Vec<String>, StoreError> {
        self.inner().renew(owner, ids, until_ms)
    }
    fn set_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.inner().set_timer(timer)
    }
    fn clear_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.inner().clear_timer(timer)
    }
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError> {
        self.inner().due_timers(now_ms, limit)
    }
    fn shared(&self) -> bool {
        self.inner().shared()
    }
    fn keeps_slots(&self) -> bool {
        self.inner().keeps_slots()
    }
    fn watch(&self, on_change: OnChange) -> Result<(), StoreError> {
        self.inner().watch(on_change)
    }
}

impl<L: Layer> Store for L {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Layer::get(self, space, key)
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        Layer::put(self, space, key, value)
    }
    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Layer::put_new(self, space, key, value)
    }
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        Layer::delete(self, space, key)
    }
    fn scan(
        &self,
        space: Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        Layer::scan(self, space, after, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Layer::flush(self)
    }
    fn recover(&self) -> Result<(), StoreError> {
        Layer::recover(self)
    }
    fn create(&self, id: &str, record: &[u8]) -> Result<Option<Versioned>, StoreError> {
        Layer::create(self, id, record)
    }
    fn read(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        Layer::read(self, id)
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        Layer::write(self, id, write)
    }
    fn remove(&self, id: &str, expected: u64) -> Result<(), WriteError> {
        Layer::remove(self, id, expected)
    }
    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        Layer::append(self, id, body)
    }
    fn append_once(&self, id: &str, key: &str, body: &[u8]) -> Result<Appended, StoreError> {
        Layer::append_once(self, id, key, body)
    }
    fn delivered(&self, id: &str, key: &str) -> Result<bool, StoreError> {
        Layer::delivered(self, id, key)
    }
    fn inbox(&self, id: &str) -> Result<Vec<Message>, StoreError> {
        Layer::inbox(self, id)
    }
    fn read_with_inbox(&self, id: &str) -> Result<Option<(Versioned, Vec<Message>)>, StoreError> {
        Layer::read_with_inbox(self, id)
    }
    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        Layer::claim(self, owner, now_ms, until_ms, after, limit)
    }
    fn claim_abandoned(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        Layer::claim_abandoned(self, owner, now_ms, until_ms, after, limit)
    }
    fn claim_ids(
        &self,
        owner: &str,
        ids: &[String],
        now_ms: u64,
        until_ms: u64,
    ) -> Option<Result<Vec<Lease>, StoreError>> {
        Layer::claim_ids(self, owner, ids, now_ms, until_ms)
    }
    fn lease(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        Layer::lease(self, id, owner, now_ms, until_ms)
    }
    fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        Layer::release(self, lease)
    }
    fn hand_over(&self, lease: &Lease) -> Result<(), StoreError> {
        Layer::hand_over(self, lease)
    }
    fn renew(&self, owner: &str, ids: &[String], until_ms: u64) -> Result<Vec<String>, StoreError> {
        Layer::renew(self, owner, ids, until_ms)
    }
    fn set_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        Layer::set_timer(self, timer)
    }
    fn clear_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        Layer::clear_timer(self, timer)
    }
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError> {
        Layer::due_timers(self, now_ms, limit)
    }
    fn shared(&self) -> bool {
        Layer::shared(self)
    }
    fn keeps_slots(&self) -> bool {
        Layer::keeps_slots(self)
    }
    fn watch(&self, on_change: OnChange) -> Result<(), StoreError> {
        Layer::watch(self, on_change)
    }
}
