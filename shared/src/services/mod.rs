//! Use cases: load the records, ask the rules, persist the decision.

pub mod billing;
pub mod events;
pub mod metering;
pub mod usage;
