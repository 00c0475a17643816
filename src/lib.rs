//! Durable workflows from ordinary `async fn`s: the crate documentation is the README, whose
//! example is compiled and run as a doctest.
#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]

pub use durable_macros::{activity, durable_fn, orchestration};
pub use durable_runtime::*;

/// The admin server: JSON API, web view with step graphs, Prometheus metrics (feature `admin`,
/// on by default). See [`admin::serve`].
#[cfg(feature = "admin")]
pub use durable_admin as admin;

#[doc(hidden)]
pub use durable_runtime::__support_v1;
