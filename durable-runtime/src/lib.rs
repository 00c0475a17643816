//! The runtime of [durable](https://example.invalid/durable): the store, the codec, the worker
//! that runs instances on tokio, and the client. Users depend on the `durable` facade, which
//! re-exports this crate and the macros.
#![doc(test(attr(deny(warnings))))]

mod activity;
pub mod codec;
mod commit;
mod op;
mod orchestration;
mod record;
mod runtime;
pub mod store;

#[doc(hidden)]
pub mod __private;

pub use activity::{Activity, ActivityContext, ActivityRegistry};
pub use op::{
    ActivityError, ActivityFailure, Call, Command, Completion, CompletionMismatch, DurableOp,
    Failure, RetryPolicy,
};
pub use orchestration::{
    Ctx, Fault, Orchestration, OrchestrationOutput, PointInfo, Resume, StepResult,
};
pub use record::{FORMAT_VERSION, Frame};
pub use runtime::{
    Durability, Handle, InstanceError, InstanceState, InstanceStatus, OpenError, Runtime,
    RuntimeBuilder, StartError, StepEvent, StepOutcome,
};

/// A value that can be kept in a checkpoint: serde-serializable and owned.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in a checkpoint",
    label = "this value must be persisted across an `.await`, but `{Self}` is not serializable and owned",
    note = "locals alive across a durable `.await`, inputs and outputs must implement `Serialize` and `DeserializeOwned`; use an owned type (e.g. `String` for `&str`) or recreate the value after the `.await`"
)]
pub trait Persistable: serde::Serialize + serde::de::DeserializeOwned + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + 'static> Persistable for T {}
