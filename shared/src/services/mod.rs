//! Use cases: load the records, ask the rules, persist the decision.

pub mod billing;
pub mod events;
pub mod failure;
pub mod inbound;
pub mod metering;
pub mod reconcile;
pub mod streams;
pub mod usage;

pub use failure::Failure;
