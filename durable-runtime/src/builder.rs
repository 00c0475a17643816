//! Configuring a runtime; [`RuntimeBuilder::open`] (in the client) opens it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::orchestration::{Orchestration, Registry};
use crate::status::{Durability, Observer, StepEvent};
use crate::store::Store;

/// Configures and opens a [`Runtime`](crate::Runtime).
pub struct RuntimeBuilder {
    pub(crate) path: PathBuf,
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) registry: Registry,
    pub(crate) observer: Option<Observer>,
    pub(crate) durability: Durability,
    pub(crate) max_payload: usize,
    pub(crate) max_record: usize,
    pub(crate) clock: Clock,
    pub(crate) lease: Duration,
    pub(crate) poll: Duration,
    pub(crate) worker: bool,
    pub(crate) isolate: bool,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("path", &self.path)
            .field("registry", &self.registry)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Registers an orchestration and the activities it calls.
    pub fn orchestration<O: Orchestration>(mut self, orchestration: impl FnOnce() -> O) -> Self {
        self.registry.add_orchestration(orchestration);
        self
    }

    /// Registers an activity.
    pub fn activity<A: crate::Activity>(mut self, activity: impl FnOnce() -> A) -> Self {
        self.registry.add_activity(activity);
        self
    }

    /// Calls `observer` after each checkpoint is durable.
    pub fn on_step(mut self, observer: impl Fn(&StepEvent) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Sets the durability of checkpoints (default [`Durability::Flush`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Uses `store` instead of a sled database at the builder's path.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The largest input or event payload a client may pass, in bytes (default 16 MiB; never
    /// more than the record limit).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The largest stored instance record, in bytes: input, current frame, pending command,
    /// buffered events, custom status and output together (default and maximum 64 MiB,
    /// [`codec::DECODE_LIMIT`](crate::codec::DECODE_LIMIT), what the decoder accepts). Every write is checked against it, so
    /// nothing is acknowledged that could not be read back: a start or an event that would
    /// exceed it is refused, a step whose checkpoint would exceed it fails its instance with a
    /// message naming what is large, and an activity result that does not fit fails that
    /// attempt.
    pub fn max_record(mut self, bytes: usize) -> Self {
        self.max_record = bytes;
        self
    }

    /// The clock timers, `ctx.now()`, retry backoffs and activity attempt timeouts read
    /// (default: the system clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How long this runtime's claim on an instance it runs lasts without being renewed
    /// (default 15 s). A worker renews the leases of the instances it works on every third of
    /// it and with every checkpoint; when a worker process dies, the workers of other processes
    /// sharing the store take its instances over once their leases run out. Shorter means a
    /// faster takeover and more renewals; it must stay well above a checkpoint's latency.
    /// Measured on the runtime's [`clock`](Self::clock).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// For a store that several processes share ([`Store::shared`]): how often this runtime
    /// looks for work that no notification announced (default 1 s): instances whose lease ran
    /// out while held (a worker died), timers set by other workers. Every 30th poll, and when
    /// the store says it missed notifications, it also claims every unfinished instance that
    /// nobody holds; a store that does not notify gets that at every poll.
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Whether drivers, orchestration steps and activity attempts run on the runtime's own code
    /// pool (default `true`) rather than on the tokio runtime's worker threads.
    ///
    /// Isolated, a step that computes without awaiting, or an activity that blocks its thread
    /// (`std::thread::sleep`, a blocking client), stalls only itself: other instances, timers,
    /// attempt timeouts, cancel and shutdown go on. The pool has one thread per core; a step,
    /// its driver and its activity attempts hand over to each other on one thread without
    /// waking another, and when code holds every thread for more than 100 ms while work waits,
    /// the pool adds a thread (up to 512; one beyond a thread per core that code does not hold
    /// leaves as soon as it is between tasks).
    ///
    /// `isolate_code(false)` runs them all as tasks of the tokio runtime. Then such a step or
    /// activity holds a worker thread of the tokio runtime, and as many of them as the runtime
    /// has worker threads stall everything, cancel and shutdown included; a step that never
    /// returns is never cancelled. It costs no less CPU than the pool (see `benches/README.md`);
    /// it is there for programs that want durable's work on their own runtime's threads.
    pub fn isolate_code(mut self, isolate: bool) -> Self {
        self.isolate = isolate;
        self
    }

    /// Whether this runtime runs instances (default `true`). A client-only runtime
    /// (`worker(false)`) over a shared store starts, lists, raises events to, cancels and waits
    /// for instances that the workers of other processes run.
    pub fn worker(mut self, worker: bool) -> Self {
        self.worker = worker;
        self
    }
}
