//! The driver: one task per instance that has work in this process.
//!
//! It loops: read the instance (through [`Records`](crate::records::Records)); apply a requested
//! cancellation or suspension; resolve the branches of the pending command that are ready (a due
//! timer, a buffered event, a finished child, a finished activity); when the command is
//! complete, run the orchestration's step and checkpoint its result before anything else
//! happens. When only waiting is left (timers, events, children) the driver ends: a waiting
//! instance holds no task, only its record and, for timers, an index entry. The timer task,
//! `raise_event`, a finishing child or a client wakes it again.
//!
//! The driver runs the instance under a lease and every write it makes is fenced by it and
//! conditional on the version it read: a write that lost a race (a client changed the record
//! meanwhile) is decided again on what the store holds, never written over it.
//!
//! Over 400 lines: the loop, the step and the cancellation share the driver's state (running
//! activities, the lease, the wake counter); splitting them would pass it all around.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use crate::branches::{self, Progress};
use crate::dispatch::{AbortOnDrop, Attempt, Finished, spawn_attempt};
use crate::engine::{Checkpoint, Engine, Handed};
use crate::error::ClientError;
use crate::op::{ActivityFailure, Command, Completion};
use crate::orchestration::{Ctx, ErasedOrchestration, Fault, LiveState, Resume, StepResult};
use crate::record::{Branch, Frame, Pending, State};
use crate::records::{Instance, Refused};
use crate::slots::{SlotBook, Unresolved};
use crate::status::{StepEvent, StepOutcome};
use crate::step::{apply_step, consumed, fail_step, take_events};
use crate::store::Lease;

/// The driver of one instance.
struct Driver {
    engine: Arc<Engine>,
    id: String,
    /// Its lease: replaced when a renewal finds it ran out and takes a new one, or when a
    /// claim of this process took a new one (`handed`).
    lease: std::sync::Mutex<Lease>,
    handed: Handed,
    /// Whether the lease came from a claim (which skips instances marked finished).
    claimed: bool,
    /// Set when a write was refused for a lease token that is no longer current.
    fenced: std::sync::atomic::AtomicBool,
    notify: Arc<Notify>,
    /// What this driver knows of the instance's frame slots (see [`crate::slots`]).
    book: std::sync::Mutex<SlotBook>,
}

/// Runs instance `id` until it waits, ends or is taken over; `lease` when it was claimed.
pub(crate) async fn drive(
    engine: Arc<Engine>,
    id: String,
    lease: Option<Lease>,
    wakes: Arc<AtomicU64>,
    notify: Arc<Notify>,
    handed: Handed,
) {
    let claimed = lease.is_some();
    let lease = match lease {
        Some(l) => Some(l),
        None => match engine.records.lease(&id, engine.clock.now_ms()) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("instance `{id}`: cannot take its lease: {e}");
                None
            }
        },
    };
    let Some(lease) = lease else {
        // Gone, or another worker runs it: that worker (or a later wake) takes it on.
        engine.forget_driver(&id);
        return;
    };
    let driver = Driver {
        engine: engine.clone(),
        id: id.clone(),
        lease: lease.into(),
        handed,
        claimed,
        fenced: false.into(),
        notify,
        book: std::sync::Mutex::default(),
    };
    let stopped = driver.run(&wakes).await;
    if driver.fenced.load(Ordering::SeqCst) {
        // A write carried a token that is no longer current. When the lease is free again (or
        // still this runtime's, under a newer token) nobody else runs the instance: go on under
        // it, from the record as stored (every write is conditional on the version read, so
        // nothing written meanwhile is overwritten). Otherwise another worker runs it.
        match engine.records.lease(&id, engine.clock.now_ms()) {
            Ok(Some(lease)) => {
                tracing::info!("instance `{id}`: its lease changed under a write; taken anew");
                engine.restart_driver(&id, Some(lease));
            }
            Ok(None) => {
                if matches!(engine.records.load(&id), Ok(Some(_))) {
                    tracing::warn!("instance `{id}`: another worker took it over; this one stops");
                }
                engine.forget_driver(&id);
            }
            Err(e) => {
                tracing::warn!("instance `{id}`: cannot take its lease again: {e}");
                engine.forget_driver(&id);
            }
        }
        return;
    }
    if !stopped {
        let seen = wakes.load(Ordering::SeqCst);
        let lease = driver.lease();
        if !engine.may_stop(&id, &wakes, seen, &lease) {
            // Woken while finishing: look again, under the same lease.
            engine.restart_driver(&id, Some(lease));
        }
    }
}

impl Driver {
    fn fence(&self) -> crate::store::Fence {
        self.engine.records.fence(&self.lease(), self.engine.clock.now_ms())
    }

    fn lease(&self) -> Lease {
        let mut lease = crate::engine::lock(&self.lease);
        if let Some(newer) = crate::engine::lock(&self.handed).take()
            && newer.token > lease.token
        {
            *lease = newer;
        }
        lease.clone()
    }

    /// The loop; `true` when it ended through [`Engine::may_stop`], `false` when it broke off.
    async fn run(&self, wakes: &AtomicU64) -> bool {
        let (engine, id) = (&self.engine, self.id.as_str());
        let (tx, mut rx) = mpsc::unbounded_channel::<Finished>();
        // Activity tasks of the current step, by branch; dropped (and aborted) with the driver.
        let mut running: HashMap<usize, AbortOnDrop> = HashMap::new();
        let mut running_key = String::new();
        let mut finished: HashMap<usize, Result<Vec<u8>, ActivityFailure>> = HashMap::new();
        // While activities run, the lease is renewed every third of its duration.
        let renew_every = (engine.records.lease_ms() / 3).max(1);
        let mut renew_at = engine.clock.now_ms().saturating_add(renew_every);
        // The instance as read before waiting for an attempt, with the wake count of then: when
        // only an attempt's result came since, it is used again instead of read again. Anything
        // else that changes the instance wakes the driver (and is read); a change no wake
        // announced is caught by the checkpoint, which is conditional on the version read.
        let mut kept: Option<(u64, crate::records::Instance)> = None;
        loop {
            let seen = wakes.load(Ordering::SeqCst);
            while let Ok((key, branch, result)) = rx.try_recv() {
                if key == running_key {
                    running.remove(&branch);
                    finished.insert(branch, result);
                }
            }
            let (instance, reused) = match kept.take() {
                Some((at, instance)) if at == seen => (instance, true),
                _ => match engine.records.load(id) {
                    Ok(Some(i)) => (i, false),
                    Ok(None) => return false,
                    Err(e) => {
                        tracing::error!("instance `{id}`: unreadable record, not run: {e}");
                        return false;
                    }
                },
            };
            let rec = &instance.rec;
            if rec.is_terminal() {
                engine.forget_resident(id);
                if self.claimed && !reused {
                    // Claimed, so not marked finished: written by an older build. Mark it.
                    // (A terminal record this driver just wrote is marked by that write.)
                    engine.records.mark_finished(id, &instance, self.fence()).await;
                }
                return false;
            }
            // A cancellation applies at once, even to a suspended instance.
            if let Some(reason) = rec.cancel.clone() {
                let _ = self.apply_cancel(&reason).await;
                return false;
            }
            if rec.suspended {
                running.clear();
                if engine.may_stop(id, wakes, seen, &self.lease()) {
                    return true;
                }
                continue;
            }
            let Some(orchestration) =
                engine.registered.orchestration(&rec.orchestration, rec.version)
            else {
                tracing::warn!(
                    "orchestration `{}` version {} is not registered; parked",
                    rec.orchestration,
                    rec.version
                );
                if engine.registered.park(&rec.orchestration, rec.version, id)
                    && engine.may_hand_over(id, wakes, seen, &self.lease())
                {
                    return true;
                }
                continue;
            };
            let Some(pending) = rec.pending.clone() else {
                // The first step, or the first after continue-as-new.
                match self.run_step(&instance, &orchestration, None, Vec::new()).await {
                    Err(()) => return false,
                    Ok(Some((StepOutcome::Incompatible(_), _)))
                        if engine.may_hand_over(id, wakes, seen, &self.lease()) =>
                    {
                        return true;
                    }
                    Ok(written) => {
                        kept = written.map(|(_, instance)| (seen, instance));
                        continue;
                    }
                }
            };
            if pending.key != running_key {
                running.clear();
                finished.clear();
                running_key = pending.key.clone();
            }
            let progress = branches::resolve(engine, id, &instance, &pending, &mut finished).await;
            if let Some(completion) = progress.completion {
                running.clear();
                finished.clear();
                match self
                    .run_step(&instance, &orchestration, Some(completion), progress.taken)
                    .await
                {
                    Err(()) => return false,
                    // Refused by this build: stays stored until a compatible build runs it.
                    Ok(Some((StepOutcome::Incompatible(_), _)))
                        if engine.may_hand_over(id, wakes, seen, &self.lease()) =>
                    {
                        return true;
                    }
                    // What the checkpoint wrote is what a read would give, unless a wake
                    // since says otherwise.
                    Ok(written) => {
                        kept = written.map(|(_, instance)| (seen, instance));
                        continue;
                    }
                }
            }
            if progress.changed {
                if self.save_branches(&instance, &pending, &progress).await.is_err() {
                    return false;
                }
                continue;
            }
            // Start the activities that may run now.
            let now = engine.clock.now_ms();
            let mut next_wake: Option<u64> = None;
            let mut look_again = false;
            for (i, (leaf, branch)) in
                pending.command.leaves().iter().zip(&progress.branches).enumerate()
            {
                if branch.done.is_some() {
                    continue;
                }
                match leaf {
                    Command::Activity { name, .. }
                        if !running.contains_key(&i)
                            && !finished.contains_key(&i)
                            && !engine.registered.knows_activity(name) =>
                    {
                        // A call issued by another process (or build) of an activity this one
                        // has not registered: wait for the registration instead of failing it.
                        look_again |= !engine.registered.await_activity(name, id);
                    }
                    Command::Activity { name, input, policy }
                        if !running.contains_key(&i) && !finished.contains_key(&i) =>
                    {
                        if branch.not_before_ms > now {
                            next_wake = min_some(next_wake, branch.not_before_ms);
                            continue;
                        }
                        let attempt = Attempt {
                            name,
                            input,
                            policy,
                            step_key: &pending.key,
                            branch: i,
                            attempt: branch.failed_attempts + 1,
                        };
                        running.insert(i, spawn_attempt(engine, id, &attempt, tx.clone()));
                    }
                    Command::Timer { fire_at_ms } => next_wake = min_some(next_wake, *fire_at_ms),
                    Command::Event { timeout_at_ms: Some(t), .. } => {
                        next_wake = min_some(next_wake, *t)
                    }
                    // A sub-orchestration waiting out its retry backoff, an event send waiting
                    // to try the store again.
                    Command::Child { .. } | Command::SendEvent { .. }
                        if branch.not_before_ms > now =>
                    {
                        next_wake = min_some(next_wake, branch.not_before_ms)
                    }
                    _ => {}
                }
            }
            if look_again {
                continue;
            }
            if running.is_empty() && finished.is_empty() {
                if let Some(at) = next_wake {
                    engine.records.set_timer(at, id);
                    engine.timer_wake.notify_one();
                }
                if engine.may_stop(id, wakes, seen, &self.lease()) {
                    return true;
                }
                continue;
            }
            if !finished.is_empty() {
                continue;
            }
            let clock = engine.clock.clone();
            tokio::select! {
                Some((key, branch, result)) = rx.recv() => {
                    if key == running_key {
                        running.remove(&branch);
                        finished.insert(branch, result);
                    }
                    kept = Some((seen, instance));
                }
                () = self.notify.notified() => {}
                () = async { match next_wake { Some(at) => clock.sleep_until(at).await, None => std::future::pending().await } } => {}
                () = clock.sleep_until(renew_at) => {
                    if !self.renew() {
                        // Taken over: the running activities are aborted with `running`.
                        return false;
                    }
                    renew_at = engine.clock.now_ms().saturating_add(renew_every);
                }
            }
        }
    }

    /// Extends the lease; `false` when another worker holds the instance now (or it is gone).
    /// A lease of ours that ran out with nobody taking it is taken anew: every write is fenced
    /// by the new token and conditional on the version read, so whatever another worker did in
    /// between is read again before anything is written over it.
    fn renew(&self) -> bool {
        match self.engine.records.lease(&self.id, self.engine.clock.now_ms()) {
            Ok(Some(l)) => {
                *crate::engine::lock(&self.lease) = l;
                true
            }
            Ok(None) => {
                tracing::warn!("instance `{}`: lease lost; another worker runs it", self.id);
                false
            }
            Err(e) => {
                // Not known to be lost: fenced writes keep it safe either way.
                tracing::warn!("instance `{}`: cannot renew its lease: {e}", self.id);
                true
            }
        }
    }

    /// Tells a refusal apart: `Err` when the driver must stop (its lease was taken over).
    fn stop_if_fenced(&self, r: Refused) -> Result<ClientError, ()> {
        match r {
            Refused::Fenced(why) => {
                // `drive` decides, once the driver has stopped, whether it was taken over.
                tracing::debug!("{why}");
                self.fenced.store(true, Ordering::SeqCst);
                Err(())
            }
            Refused::Client(e) => Ok(e),
        }
    }

    /// Records the progress of a join's branches (and the events they took).
    async fn save_branches(
        &self,
        instance: &Instance,
        pending: &Pending,
        progress: &Progress,
    ) -> Result<(), ()> {
        let (engine, id) = (&self.engine, self.id.as_str());
        let now = engine.clock.now_ms();
        let saved = engine
            .records
            .update(id, Some(self.fence()), &consumed(&progress.taken), |rec| {
                let Some(p) = rec.pending.as_mut().filter(|p| p.key == pending.key) else {
                    return Ok(None);
                };
                p.branches = progress.branches.clone();
                take_events(rec, &progress.taken);
                rec.updated_ms = now;
                Ok(Some(()))
            })
            .await;
        match saved {
            Ok(_) => self.report_branches(instance.rec.steps, pending, &progress.branches),
            Err(r) => match self.stop_if_fenced(r)? {
                ClientError::TooLarge { reason, .. } => {
                    // The branches' results together do not fit: retrying cannot help.
                    self.fail_oversized(instance, &format!("cannot record a result: {reason}"))
                        .await?;
                }
                e => tracing::error!("cannot record branch progress: {e}"),
            },
        }
        Ok(())
    }

    /// Tells the observer which branches got a stored result just now.
    fn report_branches(&self, step: u64, before: &Pending, after: &[Branch]) {
        let Some(observer) = &self.engine.observer else { return };
        let leaves = before.command.leaves();
        for (i, (old, new)) in before.branches.iter().zip(after).enumerate() {
            if old.done.is_none() && new.done.is_some() {
                observer(&StepEvent {
                    instance: self.id.clone(),
                    step,
                    completed: leaves.get(i).map(Command::describe),
                    outcome: StepOutcome::BranchRecorded(i),
                });
            }
        }
    }

    /// Runs the orchestration's code of one step as a task of the code pool of its own, so that
    /// a step that computes for long (or never returns) holds that thread only: timers, commits,
    /// clients and the other instances go on (the pool adds a thread for them). While it runs, a
    /// cancellation of the instance is applied at once; the step's result, if it ever comes, is
    /// then discarded. Without isolation ([`Engine::pool`]) it runs right here, on the driver's
    /// task.
    async fn run_code(
        &self,
        orchestration: &Arc<dyn ErasedOrchestration>,
        ctx: &Ctx,
        resume: (Option<Frame>, Vec<u8>, Option<Completion>, Option<LiveState>),
        budget: usize,
    ) -> Result<Option<std::thread::Result<StepResult>>, ()> {
        let orchestration = orchestration.clone();
        let step_ctx = ctx.clone();
        let span = tracing::Span::current();
        let run = move || {
            span.in_scope(|| {
                let resume = match (&resume.0, resume.2, resume.3) {
                    (Some(frame), Some(completion), Some(state)) => {
                        Resume::Live { frame, state, completion }
                    }
                    (Some(frame), Some(completion), None) => Resume::At { frame, completion },
                    _ => Resume::Start(&resume.1),
                };
                crate::__support_v1::with_frame_budget(budget, || {
                    std::panic::catch_unwind(AssertUnwindSafe(|| {
                        orchestration.step(&step_ctx, resume)
                    }))
                })
            })
        };
        let Some(pool) = &self.engine.pool else {
            return Ok(Some(run()));
        };
        let mut job = Box::pin(pool.run(async move { run() }));
        loop {
            tokio::select! {
                // The step's own panic is inside (`run` catches it); outside, the pool
                // closed (its tokio runtime ended): the driver stops.
                joined = &mut job => return joined.map(Some).map_err(drop),
                () = self.notify.notified() => {
                    if let Ok(Some((rec, _))) = self.engine.records.record(&self.id)
                        && let Some(reason) = rec.cancel
                    {
                        tracing::warn!("cancelled while its step still runs; the step's result will be discarded");
                        self.apply_cancel(&reason).await?;
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Runs one step of the orchestration and checkpoints the result; retries until the
    /// checkpoint is durable (the step is not done before), and returns the outcome with the
    /// instance as written. `Ok(None)`: the step's result was
    /// discarded (the instance was cancelled, or changed under it: the caller reads it again).
    /// `Err`: the driver must stop.
    async fn run_step(
        &self,
        instance: &Instance,
        orchestration: &Arc<dyn ErasedOrchestration>,
        completion: Option<Completion>,
        taken: Vec<crate::records::EventRef>,
    ) -> Result<Option<(StepOutcome, Instance)>, ()> {
        let (engine, id) = (&self.engine, self.id.as_str());
        let rec = &instance.rec;
        let completed = rec.pending.as_ref().map(|p| p.command.describe());
        let mut delay = Duration::from_millis(10);
        if rec.frame.is_some() && completion.is_none() {
            tracing::error!("instance `{id}`: a frame without a completion");
            return Ok(None);
        }
        // What this process knew of the instance's slots and its state, if the record is the
        // one it wrote.
        let at = Checkpoint { created_ms: rec.created_ms, steps: rec.steps };
        let book = engine.take_book(id, at);
        let mut live = engine.take_resident(id, at, orchestration);
        // A frame read from the store gets the chunks its slots hold back when the step needs
        // its locals: not while the state it was written from is here with the book naming its
        // slots (the machine takes that state), but after a restart, and when the step runs
        // again after a failed checkpoint (its kept state went with the first run). A frame
        // whose slots are gone or damaged fails the instance (its neighbours are not concerned).
        let knew_slots = book.is_some();
        *crate::engine::lock(&self.book) = book.unwrap_or_default();
        let (mut resolved, mut damaged) = (None, None);
        let consumed = consumed(&taken);
        loop {
            let needs_locals = !(live.is_some() && knew_slots);
            if let Some(stored) = rec.frame.as_ref().filter(|f| {
                !f.slots.is_empty() && needs_locals && resolved.is_none() && damaged.is_none()
            }) {
                match engine.records.resolve(id, rec.created_ms, stored) {
                    Ok((whole, read)) => {
                        crate::engine::lock(&self.book).adopt(&read);
                        resolved = Some(whole);
                    }
                    Err(Unresolved::Store(e)) => {
                        tracing::error!("instance `{id}`: cannot read its frame's slots: {e}");
                        return Err(());
                    }
                    Err(Unresolved::Damaged(why)) => {
                        damaged = Some(Fault::Corrupt(format!(
                            "cannot read its frame at suspension point `{}`: {why}",
                            stored.point
                        )));
                    }
                }
            }
            let frame = resolved.as_ref().or(rec.frame.as_ref());
            let now = engine.clock.now_ms();
            let started = std::time::Instant::now();
            let ctx = Ctx::new(id, now, rec.steps + 1);
            let span = tracing::debug_span!("step", n = rec.steps + 1);
            let resume = match frame {
                Some(frame) => (Some(frame.clone()), Vec::new(), completion.clone(), live.take()),
                None => (None, rec.input.clone(), None, None),
            };
            let budget = engine.records.step_budget(instance);
            let result = match &damaged {
                Some(fault) => Ok(StepResult::Fault(fault.clone())),
                None => match self
                    .run_code(orchestration, &ctx, resume, budget)
                    .instrument(span)
                    .await?
                {
                    Some(result) => result,
                    None => return Ok(None),
                },
            };
            // Activities and children this step's operations use, however they were named.
            engine.adopt(ctx.take_used(), false);
            let (result, kept) = match result {
                Ok(StepResult::Suspend { frame, command, live }) => {
                    (Ok(StepResult::Suspend { frame, command, live: None }), live)
                }
                other => (other, None),
            };
            let mut next = rec.clone();
            let mut outcome = apply_step(id, &mut next, now, result, ctx.take_status(), &taken);
            if let (StepOutcome::Incompatible(_), Some(c), Some(p)) =
                (&outcome, &completion, next.pending.as_mut())
            {
                branches::keep(p, c);
            }
            let mut base = instance.clone();
            let fence = self.fence();
            let mut shrunk = false;
            let written = loop {
                match engine
                    .records
                    .checkpoint(id, &base, &next, &consumed, fence, &self.book)
                    .await
                {
                    Ok(Some(version)) => break Some(version),
                    // The record changed since it was read. A client's request (cancel,
                    // suspend, resume) goes into the checkpoint; anything else means the
                    // instance moved on: the result is discarded, the driver reads it again.
                    Ok(None) => match engine.records.load(id) {
                        Ok(Some(latest))
                            if latest.rec.steps == rec.steps
                                && latest.rec.pending == rec.pending
                                && latest.rec.state == rec.state =>
                        {
                            next.cancel = latest.rec.cancel.clone();
                            next.suspended = latest.rec.suspended;
                            base = latest;
                        }
                        _ => return Ok(None),
                    },
                    // The checkpoint cannot be stored: the instance fails instead, saying why.
                    Err(Refused::Client(ClientError::TooLarge { reason, .. })) if !shrunk => {
                        shrunk = true;
                        next = rec.clone();
                        take_events(&mut next, &taken);
                        outcome =
                            fail_step(id, &mut next, now, &format!("cannot checkpoint: {reason}"));
                    }
                    Err(r) => match self.stop_if_fenced(r)? {
                        ClientError::Store(e @ crate::store::StoreError::Failed(_)) => {
                            // Nothing can become durable any more: stop; clients see it.
                            tracing::error!("instance `{id}` stops: {e}");
                            engine.changed();
                            return Err(());
                        }
                        e => {
                            // Not written, or not durable (a failed flush may have discarded
                            // it): run the step again on the same record.
                            tracing::error!("checkpoint failed, running the step again: {e}");
                            break None;
                        }
                    },
                }
            };
            let Some(version) = written else {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            };
            let name = rec.orchestration.clone();
            metrics::counter!("durable_steps_total", "orchestration" => name.clone()).increment(1);
            metrics::histogram!("durable_step_seconds", "orchestration" => name)
                .record(started.elapsed().as_secs_f64());
            if let Some(p) = &rec.pending {
                engine.records.clear_timers(id, p);
            }
            let book = std::mem::take(&mut *crate::engine::lock(&self.book));
            // As the checkpoint stored it.
            next.slotted |= book.touched();
            let written = Checkpoint { created_ms: next.created_ms, steps: next.steps };
            if !book.is_empty() && !next.is_terminal() {
                engine.keep_book(id, written, book);
            }
            if let (StepOutcome::Suspended(_), Some(state)) = (&outcome, kept) {
                let next = Checkpoint { created_ms: rec.created_ms, steps: rec.steps + 1 };
                engine.keep_resident(id, next, state, orchestration);
            }
            self.report(rec.steps + 1, completed, &outcome, rec.parent.as_ref());
            return Ok(Some((outcome, base.written(next, version, &consumed))));
        }
    }

    /// Tells the observer about a durable step and, when it ended the instance, the waiters
    /// and the parent.
    fn report(
        &self,
        step: u64,
        completed: Option<String>,
        outcome: &StepOutcome,
        parent: Option<&String>,
    ) {
        let engine = &self.engine;
        if let Some(observer) = &engine.observer {
            observer(&StepEvent {
                instance: self.id.clone(),
                step,
                completed,
                outcome: outcome.clone(),
            });
        }
        let terminal = matches!(
            outcome,
            StepOutcome::Completed
                | StepOutcome::Failed(_)
                | StepOutcome::Cancelled(_)
                | StepOutcome::Incompatible(_)
        );
        if terminal {
            engine.changed();
            if let Some(parent) = parent {
                engine.wake(parent);
            }
        }
    }

    /// Fails an instance whose record cannot hold what it must store next.
    async fn fail_oversized(&self, instance: &Instance, why: &str) -> Result<(), ()> {
        let (engine, id) = (&self.engine, self.id.as_str());
        let now = engine.clock.now_ms();
        let steps = instance.rec.steps;
        let failed = engine
            .records
            .update(id, Some(self.fence()), &[], |rec| {
                Ok((rec.steps == steps && !rec.is_terminal()).then(|| fail_step(id, rec, now, why)))
            })
            .await;
        match failed {
            Ok(Some(outcome)) => {
                self.report(steps + 1, None, &outcome, instance.rec.parent.as_ref());
            }
            Ok(None) => {}
            Err(r) => tracing::error!("cannot record the failure: {:?}", self.stop_if_fenced(r)?),
        }
        Ok(())
    }

    /// Ends the instance as cancelled, and asks its children to end too. `Err`: the driver must
    /// stop.
    async fn apply_cancel(&self, reason: &str) -> Result<(), ()> {
        let (engine, id) = (&self.engine, self.id.as_str());
        let now = engine.clock.now_ms();
        let applied = engine
            .records
            .update(id, Some(self.fence()), &[], |rec| {
                if rec.is_terminal() {
                    return Ok(None);
                }
                let pending = rec.pending.clone();
                rec.state = State::Cancelled { reason: reason.to_owned() };
                rec.updated_ms = now;
                Ok(Some((pending, rec.parent.clone(), rec.cancel_alone)))
            })
            .await;
        let (pending, parent, alone) = match applied {
            Ok(Some(done)) => done,
            Ok(None) => return Ok(()),
            Err(r) => {
                // Not durable: the request stays in the record, and the next run applies it.
                tracing::error!("cannot cancel: {:?}", self.stop_if_fenced(r)?);
                return Err(());
            }
        };
        let mut children = Vec::new();
        if let Some(p) = &pending {
            engine.records.clear_timers(id, p);
            for (leaf, b) in p.command.leaves().iter().zip(&p.branches) {
                if let (Command::Child { .. }, Some(child), None, false) =
                    (leaf, &b.child_id, &b.done, alone)
                {
                    children.push(child.clone());
                }
            }
        }
        tracing::info!(instance = %id, "cancelled: {reason}");
        engine.forget_resident(id);
        for child in children {
            let _ = engine
                .records
                .update_live(&child, |r| {
                    // A cancellation already asked for wins, as for clients.
                    r.cancel.get_or_insert_with(|| format!("parent cancelled: {reason}"));
                    Ok(())
                })
                .await;
            engine.wake(&child);
        }
        self.report(0, None, &StepOutcome::Cancelled(reason.to_owned()), parent.as_ref());
        Ok(())
    }
}

fn min_some(a: Option<u64>, b: u64) -> Option<u64> {
    Some(a.map_or(b, |a| a.min(b)))
}
