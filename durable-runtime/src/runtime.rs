//! The client: [`Runtime`] and [`Handle`], what users call. Reads and writes go through the
//! engine's records; nothing here touches the store or decodes a record.
//!
//! Over 400 lines: every client operation is a few lines of checks around one call into the
//! engine or the records, with the rustdoc users read; splitting them would scatter that API.

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::branches::waits_for;
use crate::builder::RuntimeBuilder;
use crate::clock::Clock;
use crate::codec;
use crate::engine::{Engine, NewInstance};
use crate::error::{ClientError, InstanceError, OpenError, SignalWithStartError, StartError};
use crate::ids::{shown_id, validate_id};
use crate::orchestration::{Orchestration, OrchestrationOutput, Registry};
use crate::pool::Pool;
use crate::record::{InstanceRecord, State};
use crate::records::Records;
use crate::records::{Refused, client_error};
use crate::registry::Registered;
use crate::status::{Durability, InstanceStatus, ListFilter, Page, Parked, Scope, status_of};
use crate::store::StoreError;
use crate::store::{SledStore, Store};

impl RuntimeBuilder {
    /// Opens the store and resumes every unfinished instance whose orchestration is registered.
    pub async fn open(self) -> Result<Runtime, OpenError> {
        let store: Arc<dyn Store> = match self.store {
            Some(s) => s,
            // On a blocking thread: sled's open reads its log, and it may wait for sled's
            // lock that a store of this process just dropped still holds.
            None => {
                let path = self.path.clone();
                let opened = tokio::task::spawn_blocking(move || SledStore::open(&path))
                    .await
                    .map_err(|e| OpenError::Thread(format!("the store's open: {e}")))?;
                Arc::new(opened?)
            }
        };
        let max_record = self.max_record.min(codec::DECODE_LIMIT);
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let records = Records::new(store, self.durability, max_record, lease_ms)
            .map_err(|e| OpenError::Thread(format!("the commit thread: {e}")))?;
        let pool = if self.isolate {
            let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
            let pool = Pool::start(tokio::runtime::Handle::current(), threads)
                .map_err(|e| OpenError::Thread(format!("the code pool: {e}")))?;
            Some(pool)
        } else {
            None
        };
        let engine = Arc::new(
            Engine::new(
                |engine, id, lease, wakes, notify, handed| {
                    Box::pin(crate::driver::drive(engine, id, lease, wakes, notify, handed))
                },
                records,
                Registered::new(self.registry),
                self.observer,
                self.max_payload.min(self.max_record).min(codec::DECODE_LIMIT),
                self.clock,
                self.worker,
            )
            .isolating(pool),
        );
        if self.worker {
            crate::timers::start(&engine);
        }
        if engine.records.shared() {
            crate::watch::start(&engine, self.poll)?;
            if self.worker {
                crate::leases::start(&engine)
                    .map_err(|e| OpenError::Thread(format!("the lease keeper: {e}")))?;
            }
        }
        engine.resume_all()?;
        Ok(Runtime { engine })
    }
}

/// A running durable runtime over one store, and the client of its instances. Cheap to clone;
/// every clone talks to the same runtime.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let rt = durable_runtime::Runtime::open("orders.db").await?;
/// if let Some(status) = rt.status("order-1")? {
///     println!("{:?}", status.state);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Arc<Engine>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Opens the sled database in directory `path` with nothing registered. Register
    /// orchestrations with [`register`](Self::register) or by starting them; their unfinished
    /// instances resume then.
    pub async fn open(path: impl AsRef<Path>) -> Result<Runtime, OpenError> {
        Self::builder(path).open().await
    }

    /// A builder for a runtime over the sled database in directory `path`.
    pub fn builder(path: impl AsRef<Path>) -> RuntimeBuilder {
        RuntimeBuilder {
            path: path.as_ref().to_owned(),
            store: None,
            registry: Registry::default(),
            observer: None,
            durability: Durability::default(),
            max_payload: 16 << 20,
            max_record: codec::DECODE_LIMIT,
            clock: Clock::system(),
            lease: Duration::from_millis(crate::records::LEASE_MS),
            poll: Duration::from_secs(1),
            worker: true,
            isolate: true,
        }
    }

    /// The runtime's clock.
    pub fn clock(&self) -> &Clock {
        &self.engine.clock
    }

    /// Registers an orchestration (and the activities it calls) and resumes its unfinished
    /// instances.
    pub fn register<O: Orchestration>(&self, orchestration: impl FnOnce() -> O) {
        self.engine.register(orchestration());
    }

    /// Registers an activity.
    pub fn register_activity<A: crate::Activity>(&self, activity: impl FnOnce() -> A) {
        let mut registry = Registry::default();
        registry.add_activity(activity);
        self.engine.adopt(registry, true);
    }

    /// Starts an instance of `orchestration` under `id`, durably, and returns a handle to it.
    ///
    /// Idempotent: if `id` exists as an instance of the same orchestration started by a client,
    /// returns a handle to that instance and starts nothing, whatever input it was started with;
    /// if it exists as another orchestration, or as a sub-orchestration of some parent, an
    /// error. `id` must not be empty, contain NUL or exceed [`MAX_ID_BYTES`](crate::MAX_ID_BYTES).
    pub async fn start<O: Orchestration>(
        &self,
        orchestration: impl FnOnce() -> O,
        id: impl Into<String>,
        input: O::Input,
    ) -> Result<Handle<O>, StartError> {
        self.start_with(orchestration, id.into(), input, |_, _| {}).await.map(|(h, _)| h)
    }

    /// Starts an instance of `orchestration` under `id` that begins at `at` (the Durable Task
    /// Framework's `startAt`, Temporal's start delay), durably, and returns a handle to it.
    ///
    /// The instance exists at once: [`status`](Self::status) and [`list`](Self::list) show it as
    /// [`InstanceState::Scheduled`](crate::InstanceState::Scheduled) until then, and
    /// [`cancel`](Self::cancel) before then ends it without running a step of it. It begins
    /// when the runtime's clock reads `at` (so `ctx.now()` in its first step reads `at` or
    /// later); a start time that passed while no runtime was open begins it as soon as one
    /// opens the store. A time already past begins it at once, as [`start`](Self::start) does.
    ///
    /// Idempotent as [`start`](Self::start) is: when `id` exists, the first start wins, its
    /// start time included. Events raised before it begins are buffered as for any instance.
    ///
    /// ```no_run
    /// # use durable_runtime::{InstanceState, Runtime};
    /// # #[allow(dead_code)]
    /// # async fn demo<O: durable_runtime::Orchestration<Input = u32>>(
    /// #     rt: Runtime,
    /// #     report: fn() -> O,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// let tomorrow = rt.clock().now() + std::time::Duration::from_secs(24 * 3600);
    /// let handle = rt.start_at(report, "report-2026-11-29", 7, tomorrow).await?;
    /// let status = handle.status()?.expect("it exists at once");
    /// assert!(matches!(status.state, InstanceState::Scheduled { at } if at == tomorrow));
    /// # Ok(()) }
    /// ```
    pub async fn start_at<O: Orchestration>(
        &self,
        orchestration: impl FnOnce() -> O,
        id: impl Into<String>,
        input: O::Input,
        at: SystemTime,
    ) -> Result<Handle<O>, StartError> {
        let at_ms = at.duration_since(UNIX_EPOCH).map_or(0, crate::clock::ms);
        let schedule = |id: &str, rec: &mut InstanceRecord| {
            if at_ms > rec.created_ms {
                rec.schedule(id, at_ms);
            }
        };
        self.start_with(orchestration, id.into(), input, schedule).await.map(|(h, _)| h)
    }

    /// Raises event `name` with `payload` for instance `id`, starting it first with `input` when
    /// there is no such instance, in one call (Temporal's `SignalWithStart`).
    ///
    /// When the call starts the instance, the event is written with its first record: no step
    /// runs before the event is buffered, and two concurrent calls on a fresh id start one
    /// instance and deliver both events (the starter's first). When the instance exists and has
    /// not finished, this is [`raise_event`](Self::raise_event) on it, and `input` is not used.
    /// As for [`start`](Self::start), an id is never started twice: an instance that has
    /// finished gets [`SignalWithStartError::Event`] with [`ClientError::Finished`] (Temporal
    /// would start a new run; here, [`purge`](Self::purge) it first), and an id held by another
    /// orchestration or by a parent gets [`SignalWithStartError::Start`]. Either way nothing
    /// was stored. Events are buffered first in, first out per name, as for `raise_event`.
    ///
    /// ```no_run
    /// # use durable_runtime::Runtime;
    /// # #[allow(dead_code)]
    /// # async fn demo<O: durable_runtime::Orchestration<Input = i64>>(
    /// #     rt: Runtime,
    /// #     counter: fn() -> O,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// // Starts `counter-7` with 0 unless it exists, and hands it `add(5)` either way.
    /// let handle = rt.signal_with_start(counter, "counter-7", 0, "add", &5i64).await?;
    /// # drop(handle);
    /// # Ok(()) }
    /// ```
    pub async fn signal_with_start<O: Orchestration, T: crate::Persistable>(
        &self,
        orchestration: impl FnOnce() -> O,
        id: impl Into<String>,
        input: O::Input,
        name: &str,
        payload: &T,
    ) -> Result<Handle<O>, SignalWithStartError> {
        let id = id.into();
        self.refuse_after_shutdown(&id)?;
        let bytes = crate::event::encode_typed(payload)
            .map_err(|e| ClientError::Payload { id: shown_id(&id), reason: e.to_string() })?;
        self.check_payload(&id, &bytes)?;
        let first = bytes.clone();
        let with_event = |_: &str, rec: &mut InstanceRecord| rec.buffer_event(name, first);
        let (handle, created) = self.start_with(orchestration, id, input, with_event).await?;
        if !created {
            self.raise_bytes(handle.id(), name, bytes).await?;
        }
        Ok(handle)
    }

    /// Starts an instance; `shape` completes its new record. The handle, and whether this call
    /// created the instance.
    async fn start_with<O: Orchestration>(
        &self,
        orchestration: impl FnOnce() -> O,
        id: String,
        input: O::Input,
        shape: impl FnOnce(&str, &mut InstanceRecord),
    ) -> Result<(Handle<O>, bool), StartError> {
        validate_id(&id).map_err(|reason| StartError::InvalidId { id: shown_id(&id), reason })?;
        let version = self.prepare_starts(orchestration).map_err(|r| r.of::<O>(&id))?;
        let input = encode_input::<O>(&id, &input)?;
        let shape = |rec: &mut InstanceRecord| shape(&id, rec);
        let shaped = NewInstance { id: id.clone(), input, parent: None, shape };
        let mut started =
            self.engine.start_many_encoded(O::NAME, Some(version), vec![Ok(shaped)]).await;
        let created = started.pop().unwrap_or(Ok(false))?;
        Ok((Handle { rt: self.clone(), id, _o: PhantomData }, created))
    }

    /// Starts an instance of `orchestration` for each `(id, input)` of `starts`, sharing one
    /// commit (one flush for all of them, where [`start`](Self::start) awaited one after
    /// another waits for a flush each), and returns a result per start, in order.
    ///
    /// Each start behaves as [`start`](Self::start) does: idempotent per id, refused with the
    /// same errors, durable when its result is `Ok`. One refused start (a bad id, an input over
    /// the limit, an id taken by another orchestration) does not hold back the others. When
    /// the shared flush fails, every start it would have made durable gets the store's error.
    ///
    /// ```no_run
    /// # use durable_runtime::Runtime;
    /// # #[allow(dead_code)]
    /// # async fn demo<O: durable_runtime::Orchestration<Input = u64>>(
    /// #     rt: Runtime,
    /// #     invoice: fn() -> O,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// let starts = (0..1000u64).map(|n| (format!("invoice-{n}"), n));
    /// for started in rt.start_many(invoice, starts).await {
    ///     let handle = started?;
    ///     println!("started {}", handle.id());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_many<O: Orchestration, I: Into<String>>(
        &self,
        orchestration: impl FnOnce() -> O,
        starts: impl IntoIterator<Item = (I, O::Input)>,
    ) -> Vec<Result<Handle<O>, StartError>> {
        let starts: Vec<(String, O::Input)> =
            starts.into_iter().map(|(id, input)| (id.into(), input)).collect();
        let version = match self.prepare_starts(orchestration) {
            Ok(v) => v,
            Err(r) => return starts.iter().map(|(id, _)| Err(r.of::<O>(id))).collect(),
        };
        let ids: Vec<String> = starts.iter().map(|(id, _)| id.clone()).collect();
        let new = starts
            .into_iter()
            .map(|(id, input)| {
                validate_id(&id)
                    .map_err(|reason| StartError::InvalidId { id: shown_id(&id), reason })?;
                let input = encode_input::<O>(&id, &input)?;
                Ok(NewInstance { id, input, parent: None, shape: |_: &mut InstanceRecord| {} })
            })
            .collect();
        let started = self.engine.start_many_encoded(O::NAME, Some(version), new).await;
        ids.into_iter()
            .zip(started)
            .map(|(id, r)| r.map(|_| Handle { rt: self.clone(), id, _o: PhantomData }))
            .collect()
    }

    /// What every start of `O` checks once: the runtime is open, and the version new instances
    /// start on takes the input of the version the caller named. Registers `O`; returns that
    /// version.
    fn prepare_starts<O: Orchestration>(
        &self,
        orchestration: impl FnOnce() -> O,
    ) -> Result<u32, Refusal> {
        if self.engine.is_shut_down() {
            return Err(Refusal::Shutdown);
        }
        self.engine.register(orchestration());
        // New instances start on the newest registered version of the name, which must take
        // the same input as the version the caller named.
        let (version, input_type) = self
            .engine
            .registered
            .newest(O::NAME)
            .unwrap_or((O::VERSION, std::any::type_name::<O::Input>()));
        if version != O::VERSION && input_type != std::any::type_name::<O::Input>() {
            return Err(Refusal::Version { newest: version });
        }
        Ok(version)
    }

    /// A handle to an existing instance of `O` (not checked until used).
    pub fn handle<O: Orchestration>(&self, id: impl Into<String>) -> Handle<O> {
        Handle { rt: self.clone(), id: id.into(), _o: PhantomData }
    }

    /// The status of instance `id`, or `None` if there is none.
    ///
    /// It shows the latest write, which can be up to one group commit ahead of what is on disk;
    /// [`Handle::wait`] hands out only results that are durable.
    pub fn status(&self, id: &str) -> Result<Option<InstanceStatus>, StoreError> {
        let Some((rec, inbox)) = self.engine.records.observe(id)? else {
            return Ok(None);
        };
        Ok(Some(self.status_of(id, rec, inbox)))
    }

    fn status_of(
        &self,
        id: &str,
        rec: Result<crate::record::InstanceRecord, String>,
        inbox: usize,
    ) -> InstanceStatus {
        let registered = |name: &str, v| self.engine.registered.orchestration(name, v).is_some();
        status_of(id, rec, registered, inbox)
    }

    /// Raises event `name` with `payload` for instance `id`. Buffered (first in, first out per
    /// name) until the orchestration waits for it; durable when this returns. The payload is
    /// stored with its type: a wait for another type gets `EventError::WrongType`.
    pub async fn raise_event<T: crate::Persistable>(
        &self,
        id: &str,
        name: &str,
        payload: &T,
    ) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        let bytes = crate::event::encode_typed(payload)
            .map_err(|e| ClientError::Payload { id: id.into(), reason: e.to_string() })?;
        self.raise_bytes(id, name, bytes).await
    }

    /// Raises event `name` with a JSON payload, for clients that do not have the Rust type (the
    /// admin API, the CLI): stored as JSON and decoded with the waiting orchestration's type
    /// when it is delivered (`EventError::BadPayload` when it does not fit).
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo(rt: durable_runtime::Runtime) -> Result<(), Box<dyn std::error::Error>> {
    /// rt.raise_event_json("order-7", "approval", &serde_json::json!({ "by": "lead", "ok": true }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn raise_event_json(
        &self,
        id: &str,
        name: &str,
        payload: &serde_json::Value,
    ) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        self.raise_bytes(id, name, crate::event::encode_json(payload)).await
    }

    async fn raise_bytes(&self, id: &str, name: &str, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.check_payload(id, &bytes)?;
        self.engine.records.raise(id, name, bytes).await?;
        self.engine.wake(id);
        Ok(())
    }

    /// Refuses an event payload over the limit.
    fn check_payload(&self, id: &str, bytes: &[u8]) -> Result<(), ClientError> {
        if bytes.len() > self.engine.max_payload {
            return Err(ClientError::Payload {
                id: id.into(),
                reason: format!(
                    "{} bytes exceed the limit of {} bytes",
                    bytes.len(),
                    self.engine.max_payload
                ),
            });
        }
        Ok(())
    }

    /// Cancels instance `id` with `reason`: at its next suspension point (at once if it waits or
    /// is suspended) it ends with the terminal state `Cancelled`; the sub-orchestrations it
    /// waits for are cancelled too, and theirs, at every depth. The same as
    /// [`cancel_with`](Self::cancel_with) and [`Scope::Tree`].
    ///
    /// The first request wins, as a termination does in the Durable Task Framework: once a
    /// cancellation is recorded, a later `cancel` with another reason changes nothing and
    /// returns [`ClientError::Cancelling`] naming the first reason (so no caller is told `Ok`
    /// for a reason that will not be applied). The same reason again returns `Ok`, so a retried
    /// call is harmless. Once the cancellation is applied, `cancel` returns
    /// [`ClientError::Finished`].
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<(), ClientError> {
        self.cancel_with(id, reason, Scope::Tree).await
    }

    /// Cancels instance `id` with `reason`, as [`cancel`](Self::cancel) does, with the
    /// sub-orchestrations it waits for ([`Scope::Tree`], recursive: what `cancel` does; the
    /// Durable Task Framework terminates alone by default, but this crate's design cancels
    /// children with their parent) or alone ([`Scope::Instance`]: its sub-orchestrations run on
    /// to their end, and nobody takes their results). A sub-orchestration a finished race left
    /// running is not waited for, so neither scope cancels it; [`purge_with`](Self::purge_with)
    /// and [`Scope::Tree`] find it.
    ///
    /// The first request wins, its scope included: the same reason again with another scope
    /// returns `Ok` and changes nothing.
    ///
    /// ```no_run
    /// # use durable_runtime::{Runtime, Scope};
    /// # #[allow(dead_code)]
    /// # async fn demo(rt: Runtime) -> Result<(), Box<dyn std::error::Error>> {
    /// // Stop the batch, and let the imports it started finish on their own.
    /// rt.cancel_with("batch-12", "replaced by batch-13", Scope::Instance).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cancel_with(
        &self,
        id: &str,
        reason: &str,
        scope: Scope,
    ) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        self.engine
            .records
            .update_live(id, |rec| match &rec.cancel {
                Some(first) if first != reason => {
                    Err(ClientError::Cancelling { id: id.into(), reason: first.clone() })
                }
                Some(_) => Ok(()),
                None => {
                    rec.cancel = Some(reason.to_owned());
                    rec.cancel_alone = scope == Scope::Instance;
                    Ok(())
                }
            })
            .await?;
        self.engine.wake(id);
        Ok(())
    }

    /// Suspends instance `id`: it stops at its current suspension point (running activities
    /// are stopped and will run again) until [`resume`](Self::resume). A suspended instance
    /// still applies a [`cancel`](Self::cancel) at once.
    pub async fn suspend(&self, id: &str) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        self.engine
            .records
            .update_live(id, |rec| {
                rec.suspended = true;
                Ok(())
            })
            .await?;
        self.engine.wake(id);
        Ok(())
    }

    /// Resumes a suspended instance.
    pub async fn resume(&self, id: &str) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        self.engine
            .records
            .update_live(id, |rec| {
                rec.suspended = false;
                Ok(())
            })
            .await?;
        self.engine.wake(id);
        Ok(())
    }

    /// Instances matching `filter`, one page at a time, in id order.
    pub fn list(&self, filter: &ListFilter) -> Result<Page, StoreError> {
        let limit = filter.limit.unwrap_or(100).max(1);
        let mut out = Vec::new();
        let mut after = filter.after.clone();
        loop {
            let batch = self.engine.records.scan_ids(after.as_deref(), 512)?;
            let Some(last) = batch.last() else {
                return Ok(Page { instances: out, next: None });
            };
            after = Some(last.clone());
            for id in batch {
                // Read with its inbox, consistently (see `Records::observe`).
                let Some((rec, inbox)) = self.engine.records.observe(&id)? else { continue };
                let status = self.status_of(&id, rec, inbox);
                let state_ok = filter.states.as_ref().is_none_or(|states| {
                    states
                        .iter()
                        .any(|s| std::mem::discriminant(s) == std::mem::discriminant(&status.state))
                });
                let name_ok =
                    filter.orchestration.as_ref().is_none_or(|n| *n == status.orchestration);
                if state_ok && name_ok {
                    out.push(status);
                    if out.len() == limit {
                        return Ok(Page { instances: out, next: Some(id) });
                    }
                }
            }
        }
    }

    /// Deletes a finished instance and everything stored for it, alone (the Durable Task
    /// Framework's default): the same as [`purge_with`](Self::purge_with) and
    /// [`Scope::Instance`]. A running instance is an error, and so is one with
    /// sub-orchestrations still running ([`ClientError::ChildrenRunning`]); finished
    /// sub-orchestrations stay stored.
    pub async fn purge(&self, id: &str) -> Result<(), ClientError> {
        self.purge_with(id, Scope::Instance).await
    }

    /// Deletes a finished instance and everything stored for it: alone ([`Scope::Instance`],
    /// what [`purge`](Self::purge) does), or with its sub-orchestrations at every depth
    /// ([`Scope::Tree`]).
    ///
    /// The instance itself must have finished ([`ClientError::Running`] otherwise), and, when
    /// it is a sub-orchestration, its parent must not be waiting to take its result
    /// ([`ClientError::ParentWaiting`]). Alone, it must have no sub-orchestration still running
    /// ([`ClientError::ChildrenRunning`] names them). With [`Scope::Tree`], sub-orchestrations still running are cancelled (reason
    /// "parent `id` purged") and this waits until they have ended before deleting them. Finding
    /// the sub-orchestrations reads every instance record (no index names an instance's
    /// children).
    ///
    /// ```no_run
    /// # use durable_runtime::{Runtime, Scope};
    /// # #[allow(dead_code)]
    /// # async fn demo(rt: Runtime) -> Result<(), Box<dyn std::error::Error>> {
    /// rt.purge_with("batch-12", Scope::Tree).await?;
    /// assert!(rt.children("batch-12")?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn purge_with(&self, id: &str, scope: Scope) -> Result<(), ClientError> {
        self.refuse_after_shutdown(id)?;
        match self.engine.records.read(id)? {
            None => return Err(ClientError::NotFound(id.into())),
            Some(Ok(rec)) if !rec.is_terminal() => return Err(ClientError::Running(id.into())),
            Some(Ok(rec)) => {
                if let Some(parent) = rec.parent
                    && let Some(Ok(p)) = self.engine.records.read(&parent)?
                    && !p.is_terminal()
                    && p.pending.as_ref().is_some_and(|pending| waits_for(pending, id))
                {
                    return Err(ClientError::ParentWaiting { id: id.into(), parent });
                }
            }
            Some(Err(_)) => {}
        }
        let tree = self.descendants(id)?;
        match scope {
            Scope::Instance => {
                let children: Vec<String> = tree
                    .iter()
                    .filter(|(_, parent, finished)| parent == id && !finished)
                    .map(|(child, _, _)| child.clone())
                    .collect();
                if !children.is_empty() {
                    return Err(ClientError::ChildrenRunning { id: id.into(), children });
                }
            }
            Scope::Tree => {
                let reason = format!("parent `{}` purged", shown_id(id));
                for (child, _, finished) in &tree {
                    if !finished {
                        self.end_for_purge(child, &reason).await?;
                    }
                }
                // Deepest first: a failure part way leaves a tree whose parents are stored.
                for (child, _, _) in tree.iter().rev() {
                    match self.engine.records.remove(child).await {
                        Ok(()) | Err(ClientError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.engine.records.remove(id).await
    }

    /// Every sub-orchestration under `id`, at every depth, parents before their children: its
    /// id, its parent's and whether it has finished. Reads every instance record.
    fn descendants(&self, id: &str) -> Result<Vec<(String, String, bool)>, StoreError> {
        let mut by_parent: std::collections::HashMap<String, Vec<(String, bool)>> =
            std::collections::HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let batch = self.engine.records.scan(after.as_deref(), 512)?;
            let Some((last, _)) = batch.last() else { break };
            after = Some(last.clone());
            for (child, rec) in batch {
                if let Ok(rec) = rec
                    && let Some(parent) = rec.parent.clone()
                {
                    by_parent.entry(parent).or_default().push((child, rec.is_terminal()));
                }
            }
        }
        let mut out = Vec::new();
        let mut next = vec![id.to_owned()];
        while let Some(parent) = next.pop() {
            for (child, finished) in by_parent.remove(&parent).unwrap_or_default() {
                next.push(child.clone());
                out.push((child, parent.clone(), finished));
            }
        }
        Ok(out)
    }

    /// Cancels `id` (unless a cancellation was asked for already) and waits until it has ended.
    async fn end_for_purge(&self, id: &str, reason: &str) -> Result<(), ClientError> {
        let mut changes = self.engine.changes.subscribe();
        match self
            .engine
            .records
            .update_live(id, |rec| {
                rec.cancel.get_or_insert_with(|| reason.to_owned());
                Ok(())
            })
            .await
        {
            Ok(()) | Err(ClientError::Finished { .. } | ClientError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.engine.wake(id);
        loop {
            match self.engine.records.read(id)? {
                Some(Ok(rec)) if !rec.is_terminal() => {}
                _ => return Ok(()),
            }
            self.refuse_after_shutdown(id)?;
            if changes.changed().await.is_err() {
                return Err(ClientError::Shutdown(shown_id(id)));
            }
        }
    }

    /// Stops every instance task of this process (their state stays stored) and waits for them,
    /// and for activity code that is running at that moment to reach its next `.await` (where
    /// it stops): once this returns, no activity code of this runtime runs any more, except code
    /// that has blocked its thread for over a second and code of attempts given up before (that
    /// timed out), which run on, unheard. Not to be called from inside an activity (it would
    /// wait a second for itself).
    /// The database closes when the last clone of the runtime (and of its handles) is dropped.
    /// On a store several processes share, the leases of the instances it ran are given back,
    /// so the other workers take them over at their next poll rather than when the leases run
    /// out (an activity that was running then runs again, under the same idempotency key).
    ///
    /// Afterwards, on every clone: [`Handle::wait`] on an unfinished instance returns
    /// [`InstanceError::Shutdown`] (pending waits end too); [`start`](Self::start) is refused
    /// with [`StartError::Shutdown`] and `raise_event`, `cancel`, `suspend`, `resume` and
    /// `purge` with [`ClientError::Shutdown`]; no instance runs. `status` and `list` still read
    /// the store.
    pub async fn shutdown(&self) {
        self.engine.shutdown().await;
    }

    fn refuse_after_shutdown(&self, id: &str) -> Result<(), ClientError> {
        if self.engine.is_shut_down() {
            return Err(ClientError::Shutdown(shown_id(id)));
        }
        Ok(())
    }
}

/// A handle to one instance of orchestration `O`.
pub struct Handle<O: Orchestration> {
    rt: Runtime,
    id: String,
    _o: PhantomData<fn() -> O>,
}

impl<O: Orchestration> fmt::Debug for Handle<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("id", &self.id).field("orchestration", &O::NAME).finish()
    }
}

type OutputOf<O> = <<O as Orchestration>::Output as OrchestrationOutput>::Ok;
type ErrorOf<O> = <<O as Orchestration>::Output as OrchestrationOutput>::Err;

impl<O: Orchestration> Handle<O> {
    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The instance's status.
    pub fn status(&self) -> Result<Option<InstanceStatus>, StoreError> {
        self.rt.status(&self.id)
    }

    /// Waits until the instance completes, fails or is cancelled, and returns its result, once
    /// that result is durable. After [`Runtime::shutdown`] (or when it happens while waiting),
    /// returns the result if the instance has already finished, else
    /// [`InstanceError::Shutdown`].
    pub async fn wait(&self) -> Result<OutputOf<O>, InstanceError<ErrorOf<O>>> {
        let mut changes = self.rt.engine.changes.subscribe();
        loop {
            let rec = match self.rt.engine.records.settled(&self.id).await {
                Ok(Some(rec)) => rec,
                Ok(None) => return Err(InstanceError::NotFound(self.id.clone())),
                Err(Refused::Client(ClientError::Unreadable { reason, .. })) => {
                    return Err(InstanceError::Faulted(format!(
                        "instance `{}`: unreadable record: {reason}",
                        self.id
                    )));
                }
                Err(r) => match client_error(r) {
                    ClientError::Store(e) => return Err(e.into()),
                    e => return Err(InstanceError::Faulted(e.to_string())),
                },
            };
            match rec.state {
                State::Completed { output } => {
                    return codec::decode(&output)
                        .map_err(|e| InstanceError::Output(self.id.clone(), e.to_string()));
                }
                State::Failed { message, payload: Some(p) } => {
                    let error = codec::decode(&p)
                        .map_err(|e| InstanceError::Output(self.id.clone(), e.to_string()))?;
                    return Err(InstanceError::Failed { error, message });
                }
                State::Failed { message, payload: None } => {
                    return Err(InstanceError::Faulted(message));
                }
                State::Cancelled { reason } => return Err(InstanceError::Cancelled(reason)),
                // Refused by this build, unless a driver is retrying it right now.
                State::Incompatible { message } if !self.rt.engine.is_driven(&self.id) => {
                    return Err(InstanceError::Incompatible(message));
                }
                State::Incompatible { .. } => {}
                State::Running => {}
            }
            // Set before `shutdown` notifies: a wait that subscribed earlier is woken below.
            if self.rt.engine.is_shut_down() {
                return Err(InstanceError::Shutdown);
            }
            if changes.changed().await.is_err() {
                return Err(InstanceError::Shutdown);
            }
        }
    }

    /// Waits until the instance is parked at a suspension point of kind `at`, and returns its
    /// status there: its step is checkpointed, it is not suspended, and this process no longer
    /// works on it; it only waits (for `at`, and whatever else its join or race waits for), and
    /// the timer index holds its timers. A test can then advance a manual [`Clock`] or raise an
    /// event knowing the instance is there, instead of polling its status and sleeping.
    ///
    /// An operation that is ready (a timer that came due, an event raised for the wait, a child
    /// that finished) does not count: the instance is about to go on. Woken by the runtime's
    /// change notifications, not by polling. Returns at once when the instance is parked there
    /// already; an `Err` when it ends first ([`ClientError::Finished`]),
    /// does not exist, or the runtime shuts down. It waits as long as the instance does
    /// something else: bound it with [`tokio::time::timeout`]. On a runtime that runs no
    /// instances ([`RuntimeBuilder::worker`]`(false)`), the stored record alone decides.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use durable_runtime::{Orchestration, Parked, Runtime};
    /// # #[allow(dead_code)]
    /// # async fn demo<O: Orchestration<Input = u64>>(
    /// #     rt: Runtime,
    /// #     nap: fn() -> O,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// // `nap` sleeps an hour; the runtime runs on `Clock::manual(..)`.
    /// let handle = rt.start(nap, "nap-1", 60).await?;
    /// handle.parked(Parked::Timer).await?;
    /// rt.clock().advance(Duration::from_secs(3600));
    /// handle.wait().await.ok();
    /// # Ok(()) }
    /// ```
    pub async fn parked(&self, at: Parked) -> Result<InstanceStatus, ClientError> {
        let engine = &self.rt.engine;
        let id = self.id.as_str();
        let mut changes = engine.changes.subscribe();
        loop {
            let instance = match engine.records.load(id) {
                Ok(Some(i)) => i,
                Ok(None) => return Err(ClientError::NotFound(id.into())),
                Err(reason) => return Err(ClientError::Unreadable { id: id.into(), reason }),
            };
            let rec = &instance.rec;
            if rec.is_terminal() {
                let state = crate::status::state_of(rec, true);
                return Err(ClientError::Finished { id: id.into(), state });
            }
            let buffered: Vec<&str> = instance.events.iter().map(|e| e.name.as_str()).collect();
            let child_finished = |child: &str| matches!(engine.records.record(child), Ok(Some((c, _))) if c.is_terminal());
            if !rec.suspended
                && !engine.is_driven(id)
                && at.matches(rec, engine.clock.now_ms(), &buffered, child_finished)
            {
                return self.rt.status(id)?.ok_or_else(|| ClientError::NotFound(id.into()));
            }
            // Set before `shutdown` notifies: a wait that subscribed earlier is woken below.
            if engine.is_shut_down() || changes.changed().await.is_err() {
                return Err(ClientError::Shutdown(shown_id(id)));
            }
        }
    }

    /// Like [`wait`](Self::wait), giving up after `timeout` (real time) with `None`.
    pub async fn wait_timeout(
        &self,
        timeout: Duration,
    ) -> Option<Result<OutputOf<O>, InstanceError<ErrorOf<O>>>> {
        tokio::time::timeout(timeout, self.wait()).await.ok()
    }
}

/// Why [`Runtime::prepare_starts`] refuses every start of an orchestration, whatever its id.
enum Refusal {
    /// The runtime was shut down.
    Shutdown,
    /// New instances start on version `newest`, which takes another input type.
    Version { newest: u32 },
}

impl Refusal {
    /// The error of the start of `O` under `id`.
    fn of<O: Orchestration>(&self, id: &str) -> StartError {
        match self {
            Refusal::Shutdown => StartError::Shutdown(shown_id(id)),
            Refusal::Version { newest } => StartError::Version {
                name: O::NAME.to_owned(),
                newest: *newest,
                requested: O::VERSION,
            },
        }
    }
}

/// The stored form of a new instance's input, checked to decode again.
fn encode_input<O: Orchestration>(id: &str, input: &O::Input) -> Result<Vec<u8>, StartError> {
    codec::encode(input)
        .and_then(|b| codec::check_readable::<O::Input>(&b).map(|()| b))
        .map_err(|e| StartError::Input { id: id.to_owned(), reason: e.to_string() })
}
