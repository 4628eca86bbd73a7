//! Coffer's shared library: every function's handler, and the domain, adapters and HTTP pieces
//! they are built from. Function crates only wire a handler to the Lambda runtime.
//!
//! Dependencies point one way: `handlers`/`jobs` → `services` → `app` → `adapters` → `domain` (see `docs/architecture.md`).

pub mod adapters;
pub mod api;
pub mod app;
pub mod auth;
pub mod calls;
pub mod config;
pub mod domain;
pub mod formats;
pub mod handlers;
pub mod http;
pub mod jobs;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod runtime;
pub mod scoping;
pub mod services;
pub mod telemetry;

pub use adapters::stripe::webhook;
pub use app::App;
