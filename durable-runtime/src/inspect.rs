//! What tools that look at a runtime from the outside need (the admin server, the `durable`
//! CLI): registered orchestrations and their step graphs, an instance's locals rendered as JSON,
//! its sub-orchestrations, and counts over all instances.
//!
//! Everything here reads; nothing changes an instance.

use std::collections::BTreeMap;

use crate::graph::{RenderedFrame, StepGraph};
use crate::record::InstanceRecord;
use crate::runtime::Runtime;
use crate::status::{InstanceState, state_of};
use crate::store::StoreError;

/// Reading an instance for people failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// No instance has this id.
    #[error("no instance `{0}`")]
    NotFound(String),
    /// The instance's record cannot be read.
    #[error("instance `{id}`: unreadable record: {reason}")]
    Unreadable {
        /// The instance id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The instance's orchestration version is not registered in this process, so its locals
    /// cannot be decoded with their types.
    #[error("orchestration `{orchestration}` version {version} is not registered in this process")]
    Unregistered {
        /// The stored orchestration name.
        orchestration: String,
        /// The stored version.
        version: u32,
    },
    /// The frame does not decode with the registered orchestration's types.
    #[error("instance `{id}`: {reason}")]
    Frame {
        /// The instance id.
        id: String,
        /// What the decoder said.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many unfinished instances are parked at one suspension point.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PointCount {
    /// The orchestration version of the instances counted.
    pub version: u32,
    /// The point's identity, as in [`GraphPoint::identity`](crate::GraphPoint::identity).
    pub point: String,
    /// Unfinished (running or suspended) instances whose current frame is at this point.
    pub instances: u64,
}

impl Runtime {
    /// The registered orchestrations: name and version, sorted.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let rt = durable_runtime::Runtime::open("orders.db").await?;
    /// for (name, version) in rt.orchestrations() {
    ///     println!("{name} v{version}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn orchestrations(&self) -> Vec<(String, u32)> {
        self.engine.registered.orchestrations()
    }

    /// The step graph of the newest registered version of orchestration `name`, or `None` if
    /// no version is registered.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let rt = durable_runtime::Runtime::open("orders.db").await?;
    /// if let Some(graph) = rt.graph("invoice") {
    ///     println!("{} points", graph.points.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn graph(&self, name: &str) -> Option<StepGraph> {
        let (version, _) = self.engine.registered.newest(name)?;
        self.graph_version(name, version)
    }

    /// The step graph of version `version` of orchestration `name`, if registered.
    pub fn graph_version(&self, name: &str, version: u32) -> Option<StepGraph> {
        Some(self.engine.registered.orchestration(name, version)?.graph())
    }

    /// The locals of instance `id`'s current frame, decoded with the types of its registered
    /// orchestration version: `Ok(None)` when the instance has no frame (it has not reached its
    /// first suspension point, or it has finished).
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let rt = durable_runtime::Runtime::open("orders.db").await?;
    /// if let Some(frame) = rt.locals("order-1")? {
    ///     for (name, value) in &frame.locals {
    ///         println!("{name} = {value}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn locals(&self, id: &str) -> Result<Option<RenderedFrame>, RenderError> {
        let Some(rec) = self.engine.records.read(id)? else {
            return Err(RenderError::NotFound(id.to_owned()));
        };
        let rec = rec.map_err(|reason| RenderError::Unreadable { id: id.to_owned(), reason })?;
        let Some(stored) = &rec.frame else { return Ok(None) };
        if rec.is_terminal() {
            return Ok(None);
        }
        let resolved;
        let frame = if stored.slots.is_empty() {
            stored
        } else {
            resolved = self.engine.records.resolve(id, rec.created_ms, stored).map_err(|e| {
                RenderError::Frame {
                    id: id.to_owned(),
                    reason: match e {
                        crate::slots::Unresolved::Damaged(why) => why,
                        crate::slots::Unresolved::Store(e) => format!("reading its slots: {e}"),
                    },
                }
            })?;
            &resolved.0
        };
        let orchestration =
            self.engine.registered.orchestration(&rec.orchestration, rec.version).ok_or(
                RenderError::Unregistered {
                    orchestration: rec.orchestration.clone(),
                    version: rec.version,
                },
            )?;
        orchestration
            .render(frame)
            .map(Some)
            .map_err(|e| RenderError::Frame { id: id.to_owned(), reason: e.to_string() })
    }

    /// The ids of the sub-orchestrations instance `id` started (those still stored), in id
    /// order. Reads every instance record.
    pub fn children(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        self.each_record(|key, rec| {
            if rec.is_some_and(|r| r.parent.as_deref() == Some(id)) {
                out.push(key.to_owned());
            }
        })?;
        Ok(out)
    }

    /// How many unfinished instances of orchestration `name` are parked at each suspension
    /// point, by version and point, sorted. Reads every instance record.
    pub fn point_counts(&self, name: &str) -> Result<Vec<PointCount>, StoreError> {
        let mut counts: BTreeMap<(u32, String), u64> = BTreeMap::new();
        self.each_record(|_, rec| {
            if let Some(rec) = rec
                && rec.orchestration == name
                && !rec.is_terminal()
                && let Some(frame) = &rec.frame
            {
                *counts.entry((rec.version, frame.point.clone())).or_default() += 1;
            }
        })?;
        Ok(counts
            .into_iter()
            .map(|((version, point), instances)| PointCount { version, point, instances })
            .collect())
    }

    /// The number of stored instances in each state, by the state's name in lower case
    /// (`scheduled`, `running`, `completed`, `failed`, `cancelled`, `suspended`, `incompatible`,
    /// `unregistered`); an unreadable record counts as `failed`. Reads every instance record.
    pub fn state_counts(&self) -> Result<BTreeMap<&'static str, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        self.each_record(|_, rec| {
            let state = match rec {
                Some(rec) => {
                    let registered = self
                        .engine
                        .registered
                        .orchestration(&rec.orchestration, rec.version)
                        .is_some();
                    match state_of(rec, registered) {
                        InstanceState::Running if rec.suspended => InstanceState::Suspended,
                        s => s,
                    }
                }
                None => InstanceState::Failed { message: String::new() },
            };
            *counts.entry(state.name()).or_default() += 1;
        })?;
        Ok(counts)
    }

    /// Calls `f` with each stored instance's id and record (`None` when it cannot be read).
    fn each_record(
        &self,
        mut f: impl FnMut(&str, Option<&InstanceRecord>),
    ) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let batch = self.engine.records.scan(after.as_deref(), 512)?;
            let Some((last, _)) = batch.last() else { return Ok(()) };
            after = Some(last.clone());
            for (id, rec) in &batch {
                f(id, rec.as_ref().ok());
            }
        }
    }
}

impl InstanceState {
    /// The state's name in lower case: `scheduled`, `running`, `completed`, `failed`, `cancelled`,
    /// `suspended`, `incompatible` or `unregistered`.
    pub fn name(&self) -> &'static str {
        match self {
            InstanceState::Scheduled { .. } => "scheduled",
            InstanceState::Running => "running",
            InstanceState::Completed => "completed",
            InstanceState::Failed { .. } => "failed",
            InstanceState::Cancelled { .. } => "cancelled",
            InstanceState::Suspended => "suspended",
            InstanceState::Incompatible { .. } => "incompatible",
            InstanceState::Unregistered => "unregistered",
        }
    }
}
