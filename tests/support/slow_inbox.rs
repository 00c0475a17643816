//! A sled store whose inbox appends (raised events) take `delay` before they are made: whatever
//! the runtime does between a write and a later event then has time to happen, so a test can
//! tell an event written with a record from one raised after it.

use std::time::Duration;

use durable::store::{
    Entries, Lease, Message, SledStore, Space, Store, StoreError, Timer, Versioned, Write,
    WriteError,
};

pub struct SlowInbox {
    pub inner: SledStore,
    pub delay: Duration,
}

impl Store for SlowInbox {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(space, key)
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.inner.put(space, key, value)
    }
    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.put_new(space, key, value)
    }
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.inner.delete(space, key)
    }
    fn scan(
        &self,
        space: Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.inner.scan(space, after, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn create(&self, id: &str, record: &[u8]) -> Result<Option<Versioned>, StoreError> {
        self.inner.create(id, record)
    }
    fn read(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.read(id)
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        self.inner.write(id, write)
    }
    fn remove(&self, id: &str, expected: u64) -> Result<(), WriteError> {
        self.inner.remove(id, expected)
    }
    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        std::thread::sleep(self.delay);
        self.inner.append(id, body)
    }
    fn inbox(&self, id: &str) -> Result<Vec<Message>, StoreError> {
        self.inner.inbox(id)
    }
    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.inner.claim(owner, now_ms, until_ms, after, limit)
    }
    fn lease(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        self.inner.lease(id, owner, now_ms, until_ms)
    }
    fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease)
    }
    fn set_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.inner.set_timer(timer)
    }
    fn clear_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.inner.clear_timer(timer)
    }
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError> {
        self.inner.due_timers(now_ms, limit)
    }
}
