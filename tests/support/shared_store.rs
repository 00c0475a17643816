//! A sled store that says it is shared ([`Store::shared`]) and tells of no change: several
//! runtimes of one test over one `Arc` of it behave like worker processes on a server database
//! whose notifications are all lost, so they find work by their poll alone.

use std::sync::Arc;

use durable::store::{Layer, SledStore, Store};

pub struct SharedSled(pub Arc<SledStore>);

impl Layer for SharedSled {
    fn inner(&self) -> &dyn Store {
        &*self.0
    }
    fn shared(&self) -> bool {
        true
    }
}
