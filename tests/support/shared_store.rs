//! A sled store that says it is shared ([`Store::shared`]) and tells of no change: several
//! runtimes of one test over one `Arc` of it behave like worker processes on a server database
//! whose notifications are all lost, so they find work by their poll alone.

use std::sync::Arc;

use durable::store::{
    Entries, Lease, Message, SledStore, Space, Store, StoreError, Timer, Versioned, Write,
    WriteError,
};

pub struct SharedSled(pub Arc<SledStore>);

impl Store for SharedSled {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(space, key)
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.0.put(space, key, value)
    }
    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.put_new(space, key, value)
    }
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.0.delete(space, key)
    }
    fn scan(
        &self,
        space: Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.0.scan(space, after, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()
    }
    fn create(&self, id: &str, record: &[u8]) -> Result<Option<Versioned>, StoreError> {
        self.0.create(id, record)
    }
    fn read(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        self.0.read(id)
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        self.0.write(id, write)
    }
    fn remove(&self, id: &str, expected: u64) -> Result<(), WriteError> {
        self.0.remove(id, expected)
    }
    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        self.0.append(id, body)
    }
    fn inbox(&self, id: &str) -> Result<Vec<Message>, StoreError> {
        self.0.inbox(id)
    }
    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.0.claim(owner, now_ms, until_ms, after, limit)
    }
    fn lease(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        self.0.lease(id, owner, now_ms, until_ms)
    }
    fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.0.release(lease)
    }
    fn set_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.0.set_timer(timer)
    }
    fn clear_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.0.clear_timer(timer)
    }
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError> {
        self.0.due_timers(now_ms, limit)
    }
    fn shared(&self) -> bool {
        true
    }
}
