//! # durable
//!
//! Durable workflows from ordinary `async fn`s. Mark side effects `#[activity]`, the process
//! `#[orchestration]`, and call activities through the context. The orchestration is compiled
//! into an explicit step machine whose live locals are checkpointed after every durable `.await`;
//! after a crash — `kill -9` included — every unfinished instance continues from its last
//! checkpoint. Nothing is replayed.
//!
//! See the repository README for the guarantees and the examples.
#![doc(test(attr(deny(warnings))))]

pub use durable_macros::{activity, orchestration};
pub use durable_runtime::*;

#[doc(hidden)]
pub use durable_runtime::__private;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
