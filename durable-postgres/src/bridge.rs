//! The store's own tokio runtime, on a dedicated thread, and the blocking call into it.
//!
//! The [`Store`](durable_runtime::store::Store) trait is synchronous and is called from inside
//! the application's tokio tasks, where `block_on` panics. So the work runs on a current-thread
//! runtime the store owns, and the caller waits on a standard channel: a blocked thread of the
//! caller's runtime never needs to make progress for the answer to come.

use std::cell::Cell;
use std::future::Future;
use std::sync::mpsc;

use durable_runtime::store::StoreError;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// Set on the store's runtime thread, where a blocking call would wait for itself.
    static ON_STORE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// A handle on the store's runtime; dropping it stops the runtime (and every task on it).
#[derive(Debug)]
pub(crate) struct Bridge {
    handle: Handle,
    /// Sent (or dropped) to stop the runtime's thread.
    stop: Option<oneshot::Sender<()>>,
}

impl Bridge {
    /// Starts the runtime on a thread of its own.
    pub(crate) fn start() -> Result<Self, StoreError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
                StoreError::Io(format!("cannot start the PostgreSQL store's runtime: {e}"))
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("durable-postgres".into())
            .spawn(move || {
                ON_STORE_THREAD.with(|on| on.set(true));
                // Runs the spawned tasks until the store is dropped; the runtime is dropped
                // here, outside any async context, which cancels what is left.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| {
                StoreError::Io(format!("cannot start the PostgreSQL store's thread: {e}"))
            })?;
        Ok(Self { handle, stop: Some(stop) })
    }

    /// Runs `work` on the store's runtime and blocks the calling thread until it is done.
    /// Refused on the store's runtime thread, where it would wait for itself forever (no code
    /// of the store does that; the guard turns a future mistake into an error, not a hang).
    pub(crate) fn call<T, E>(
        &self,
        work: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if ON_STORE_THREAD.with(Cell::get) {
            return Err(E::from(StoreError::Io(
                "a PgStore was called from its own runtime thread, which would wait for itself"
                    .into(),
            )));
        }
        let (done, answer) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            // The caller is gone only if it panicked: nobody to tell.
            let _ = done.send(work.await);
        });
        answer
            .recv()
            .map_err(|_| E::from(StoreError::Io("the PostgreSQL store's runtime stopped".into())))?
    }

    /// Runs `task` on the store's runtime until it ends or the store is dropped.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.handle.spawn(task));
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
