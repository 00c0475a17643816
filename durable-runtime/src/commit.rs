//! Group commit: many checkpoints, one flush.
//!
//! A writer puts its record, then asks for a commit and waits. One thread takes every request
//! queued so far and flushes once; a flush covers every write that returned before it started,
//! so all those writers are durable when it returns.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use crate::store::{Store, StoreError};

type Waiter = oneshot::Sender<Result<(), StoreError>>;

pub(crate) struct GroupCommit {
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl GroupCommit {
    pub(crate) fn start(store: Arc<dyn Store>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = thread::Builder::new().name("durable-commit".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let result = store.flush();
                for waiter in batch {
                    let _ = waiter.send(result.clone());
                }
            }
            // The runtime is gone: make whatever it wrote last durable too.
            if let Err(e) = store.flush() {
                tracing::error!("final flush failed: {e}");
            }
        })?;
        Ok(Self { tx: Some(tx), thread: Some(thread) })
    }

    /// Waits until every write made before this call is durable.
    pub(crate) async fn commit(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let closed = || StoreError::Io("the commit thread has stopped".into());
        self.tx.as_ref().ok_or_else(closed)?.send(tx).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
