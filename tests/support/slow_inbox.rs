//! A sled store whose inbox appends (raised events) take `delay` before they are made: whatever
//! the runtime does between a write and a later event then has time to happen, so a test can
//! tell an event written with a record from one raised after it.

use std::time::Duration;

use durable::store::{Layer, SledStore, Store, StoreError};

pub struct SlowInbox {
    pub inner: SledStore,
    pub delay: Duration,
}

impl Layer for SlowInbox {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        std::thread::sleep(self.delay);
        self.inner.append(id, body)
    }
}
