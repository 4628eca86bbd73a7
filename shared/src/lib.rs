//! Coffer's shared library: every function's handler, and the domain, ledger, Stripe, secrets and
//! HTTP pieces they are built from. Function crates only wire a handler to the Lambda runtime.

pub mod app;
pub mod auth;
pub mod config;
pub mod handlers;
pub mod http;
pub mod invariants;
pub mod jobs;
pub mod ledger;
pub mod money;
pub mod packages;
pub mod payments;
pub mod reconcile;
pub mod runtime;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod webhook;

pub use app::App;
