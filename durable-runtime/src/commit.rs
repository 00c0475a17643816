//! Group commit: many checkpoints, one flush.
//!
//! A writer takes the current [`Epoch`], puts its record, then asks for a commit of everything
//! written since that epoch and waits. One thread takes every request queued so far and flushes
//! once; a flush covers every write that returned before it started, so all those writers are
//! durable when it returns.
//!
//! A failed flush fails every request of its batch, then the store recovers (forgetting what was
//! not durable) and the epoch moves on twice: once before the recovery and once after it. A
//! request whose epoch is older than the flush's saw a recovery happen after its write began, so
//! its write may be gone: it fails too, and its writer starts over from what the store holds.
//! Nothing is acknowledged that was not flushed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

use crate::error::unless_panics;
use crate::slots::{Durability, Mark};
use crate::store::{Store, StoreError};

/// When a writer began: taken before its write, handed to [`GroupCommit::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch(u64);

struct Request {
    since: Epoch,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

pub(crate) struct GroupCommit {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<thread::JoinHandle<()>>,
    flusher: Arc<Flusher>,
}

/// What a flush needs and what it changes, shared by the commit thread and a writer that
/// flushes for itself (see [`GroupCommit::commit`]).
struct Flusher {
    store: Arc<dyn Store>,
    epoch: AtomicU64,
    flushes: Flushes,
    /// Held while a flush runs: one at a time.
    flushing: Mutex<()>,
    /// Requests sent to the commit thread that it has not taken yet.
    pending: AtomicUsize,
}

/// The flushes made, counted: what [`Mark`]s are judged by.
#[derive(Default)]
struct Flushes {
    /// The number of the last flush that began.
    began: AtomicU64,
    /// The number of the last flush that succeeded.
    succeeded: AtomicU64,
}

impl Flusher {
    /// Flushes once for `requests` writers (call with `flushing` held); gives the epoch the
    /// flush ran in and its result. A failed flush moves the epoch on, recovers the store, and
    /// moves it on again.
    fn flush(&self, requests: usize) -> (Epoch, Result<(), StoreError>) {
        let at = Epoch(self.epoch.load(Ordering::SeqCst));
        let started = std::time::Instant::now();
        // A store that panics fails this flush like an error would (and is recovered below).
        let number = self.flushes.began.fetch_add(1, Ordering::SeqCst) + 1;
        let result = unless_panics(|| self.store.flush()).unwrap_or_else(|panic| {
            Err(StoreError::Io(format!("the store panicked while flushing: {panic}")))
        });
        if result.is_ok() {
            self.flushes.succeeded.store(number, Ordering::SeqCst);
        }
        metrics::histogram!("durable_commit_seconds").record(started.elapsed().as_secs_f64());
        let size = u32::try_from(requests).unwrap_or(u32::MAX);
        metrics::histogram!("durable_commit_batch_size").record(f64::from(size));
        if let Err(e) = &result {
            tracing::error!("flush failed; forgetting what it would have made durable: {e}");
            self.epoch.fetch_add(1, Ordering::SeqCst);
            match unless_panics(|| self.store.recover()) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("the store could not recover: {e}"),
                Err(panic) => tracing::error!("the store panicked while recovering: {panic}"),
            }
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
        (at, result)
    }

    fn flush_now(&self, requests: usize) -> (Epoch, Result<(), StoreError>) {
        let _one = self.flushing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.flush(requests)
    }
}

/// What a writer that began at `since` is told of a flush that ran in epoch `at`.
fn reply(since: Epoch, at: Epoch, result: &Result<(), StoreError>) -> Result<(), StoreError> {
    match result {
        Err(e) => Err(e.clone()),
        Ok(()) if since != at => {
            Err(StoreError::Io("a failed flush discarded this write; it must be made again".into()))
        }
        Ok(()) => Ok(()),
    }
}

impl GroupCommit {
    pub(crate) fn start(store: Arc<dyn Store>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        let flusher = Arc::new(Flusher {
            store,
            epoch: AtomicU64::new(0),
            flushes: Flushes::default(),
            flushing: Mutex::new(()),
            pending: AtomicUsize::new(0),
        });
        let shared = flusher.clone();
        let thread = thread::Builder::new().name("durable-commit".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                shared.pending.fetch_sub(batch.len(), Ordering::SeqCst);
                let (at, result) = shared.flush_now(batch.len());
                for request in batch {
                    let _ = request.reply.send(reply(request.since, at, &result));
                }
            }
            // The runtime is gone: make whatever it wrote last durable too.
            if let Err(e) = shared.store.flush() {
                tracing::error!("final flush failed: {e}");
            }
        })?;
        Ok(Self { tx: Some(tx), thread: Some(thread), flusher })
    }

    /// The epoch to take before a write that will be committed.
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.flusher.epoch.load(Ordering::SeqCst))
    }

    /// The mark of what was written since `since` (taken before the writes) and before this
    /// call: a recovery after `since` may have discarded those writes, so it counts from then.
    pub(crate) fn mark(&self, since: Epoch) -> Mark {
        Mark { epoch: since.0, began: self.flusher.flushes.began.load(Ordering::SeqCst) }
    }

    /// Asks for a flush of what was written before this call, without waiting for it.
    pub(crate) fn request(&self) {
        let (reply, _) = oneshot::channel();
        if let Some(tx) = &self.tx {
            self.flusher.pending.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(Request { since: self.epoch(), reply });
        }
    }

    /// Waits until every write made since `since` (and before this call) is durable; fails when
    /// a flush failed, or when a recovery since `since` may have discarded them.
    ///
    /// A writer on a thread of the code pool that has nothing else to run flushes for itself
    /// when no flush is running and no other writer waits for one: its thread would only wait,
    /// and the two hand-overs to the commit thread and back (each a wake-up) were a fifth of a
    /// lone instance's step. Writers that come together still share the commit thread's
    /// flushes.
    pub(crate) async fn commit(&self, since: Epoch) -> Result<(), StoreError> {
        if self.flusher.pending.load(Ordering::SeqCst) == 0
            && crate::pool::idle_here()
            && let Ok(_one) = self.flusher.flushing.try_lock()
        {
            let (at, result) = self.flusher.flush(1);
            return reply(since, at, &result);
        }
        let (reply, rx) = oneshot::channel();
        let closed = || StoreError::Io("the commit thread has stopped".into());
        self.flusher.pending.fetch_add(1, Ordering::SeqCst);
        self.tx
            .as_ref()
            .ok_or_else(closed)?
            .send(Request { since, reply })
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

impl Durability for GroupCommit {
    fn durable(&self, mark: Mark) -> bool {
        // The epoch is read last: a failed flush moves it before a later flush can succeed.
        let succeeded = self.flusher.flushes.succeeded.load(Ordering::SeqCst);
        succeeded > mark.began && self.flusher.epoch.load(Ordering::SeqCst) == mark.epoch
    }

    fn lost(&self, mark: Mark) -> bool {
        self.flusher.epoch.load(Ordering::SeqCst) != mark.epoch
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::store::{Layer, SledStore};

    /// A sled store whose next flush fails when told to.
    struct Failing {
        inner: SledStore,
        fail: AtomicBool,
    }

    impl Layer for Failing {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }
        fn flush(&self) -> Result<(), StoreError> {
            if self.fail.swap(false, Ordering::SeqCst) {
                return Err(StoreError::Io("the disk is full".into()));
            }
            self.inner.flush()
        }
    }

    #[tokio::test]
    async fn a_write_a_failed_flush_may_have_discarded_never_counts_as_durable() {
        let dir = std::env::temp_dir().join(format!("durable-commit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Failing {
            inner: SledStore::open(&dir).unwrap(),
            fail: AtomicBool::new(true),
        });
        let commit = GroupCommit::start(store.clone()).unwrap();
        // A write made since `since`, then a flush that fails and a recovery: its mark, even
        // taken after the recovery, is lost.
        let since = commit.epoch();
        assert!(commit.commit(since).await.is_err());
        let mark = commit.mark(since);
        assert!(commit.lost(mark));
        commit.commit(commit.epoch()).await.unwrap();
        assert!(!commit.durable(mark), "a later successful flush does not bring it back");
        // A write under a fresh epoch is durable once a flush that began after it succeeded.
        let since = commit.epoch();
        let mark = commit.mark(since);
        assert!(!commit.durable(mark) && !commit.lost(mark));
        commit.commit(since).await.unwrap();
        assert!(commit.durable(mark));
        drop(commit);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
