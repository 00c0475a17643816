//! The admin server of [durable](https://example.invalid/durable): see and steer the instances of
//! a running [`Runtime`] over HTTP.
//!
//! Opt-in: nothing listens until [`serve`] is called. It serves
//! - a JSON API (`/api/…`): list instances with filters and pagination, describe one (state,
//!   point, pending command, locals decoded with their real types, custom status, parent and
//!   children, timestamps, error), the step graph of an orchestration with the number of
//!   instances parked at each point, and raise / cancel / suspend / resume / purge;
//! - `/metrics` in the Prometheus text format;
//! - a web view: instances, one instance, and each orchestration's step graph drawn as SVG.
//!
//! Every request needs the bearer token: `Authorization: Bearer <token>` from scripts (the
//! `durable` CLI), or, from a browser, the cookie set when a page is opened once with
//! `?token=<token>`. The cookie is `HttpOnly` and `SameSite=Strict` and is accepted for reading
//! (`GET`) only, so no other site can make a browser change an instance. It is named for the
//! server's port (`durable_admin_PORT`) and holds a value derived from the token, not the
//! token: other services on the same host receive it too (cookies are not kept apart by port),
//! and what they receive neither works as a bearer token nor gives the token away. The token
//! is generated when not given and written to a file only its owner can read ([`TOKEN_FILE`]
//! in the directory given to [`AdminOptions::new`]); it is never logged.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = durable_runtime::Runtime::open("orders.db").await?;
//! let admin = durable_admin::serve(rt.clone(), durable_admin::AdminOptions::new("orders.db")).await?;
//! println!("admin on {}, token in {}", admin.url(), admin.token_file().map_or("-".into(), |p| p.display().to_string()));
//! # Ok(()) }
//! ```
#![doc(test(attr(deny(warnings))))]

mod api;
mod auth;
mod events;
mod markup;
mod prometheus;
mod server;
mod svg;
pub mod view;
mod web;

pub use events::raise_json;
pub use prometheus::install_metrics;
pub use server::{Admin, AdminOptions, ServeError, TOKEN_FILE, URL_FILE, serve};
pub use view::ApiError;

pub use durable_runtime::Runtime;
