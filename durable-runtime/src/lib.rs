//! The runtime of [durable](https://example.invalid/durable): the store, the codec, the worker
//! that runs instances on tokio, and the client. Users depend on the `durable` facade, which
//! re-exports this crate and the macros.
#![doc(test(attr(deny(warnings))))]

mod activity;
mod branches;
mod builder;
mod clock;
mod codec;
mod commit;
mod dispatch;
mod driver;
mod engine;
mod error;
mod event;
mod graph;
mod ids;
mod inspect;
mod leases;
mod op;
mod orchestration;
mod polls;
mod pool;
mod record;
mod records;
mod registry;
mod retry;
mod runtime;
mod slots;
mod status;
mod step;
pub mod store;
mod timers;
mod watch;

/// What the code `#[orchestration]`, `#[durable_fn]` and `#[activity]` generate needs, and the
/// stored format: not a public API. The version in the name changes whenever generated code and
/// this module stop matching, so a macro of one release never links against another's support.
#[doc(hidden)]
pub mod __support_v1;

pub use activity::{Activity, ActivityContext};
pub use builder::RuntimeBuilder;
pub use clock::Clock;
pub use codec::MAX_DEPTH;
pub use error::{ClientError, InstanceError, OpenError, SignalWithStartError, StartError};
pub use graph::{GRAPH_END, GRAPH_START, GraphLocal, GraphPoint, RenderedFrame, StepGraph};
pub use ids::{DERIVED_ID_PREFIX, MAX_ID_BYTES};
pub use inspect::{PointCount, RenderError};
pub use op::{
    ActivityError, ActivityFailure, AnyOp, AnyOutput, Call, Child, ChildError, ChildFailure,
    ContinueAsNew, DurableOp, Either, EventError, Failure, IntoAnyOp, Join, Join2, Race, Race2,
    RetryPolicy, SendError, SendEvent, Sleep, WaitEvent,
};
pub use orchestration::{ActivityOutput, Ctx, Orchestration, OrchestrationOutput};
pub use runtime::{Handle, Runtime};
pub use status::{
    Durability, InstanceState, InstanceStatus, ListFilter, Page, Parked, Scope, StepEvent,
    StepOutcome,
};

/// A value that can be kept in a checkpoint: serde-serializable and owned.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in a checkpoint",
    label = "stored in a checkpoint, so it must be serializable and owned",
    note = "every local alive across a durable `.await`, and every input and output, is stored: its type must implement `Serialize` and `DeserializeOwned` and must not borrow; use an owned, serializable type (`String` for `&str`, a `#[derive(Serialize, Deserialize)]` type) or recreate the value after the `.await`"
)]
pub trait Persistable: serde::Serialize + serde::de::DeserializeOwned + 'static {}

// `do_not_recommend`: a failed bound is reported as `T: Persistable`, once, with the message
// above, instead of one error each for `Serialize` and `DeserializeOwned`.
#[diagnostic::do_not_recommend]
impl<T: serde::Serialize + serde::de::DeserializeOwned + 'static> Persistable for T {}
