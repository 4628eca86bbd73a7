//! Use cases: load the records, ask the rules, persist the decision.

pub mod accounts;
pub mod billing;
pub mod budget;
pub mod checkout;
pub mod credits;
pub mod developers;
pub mod events;
pub mod expiry;
pub mod failure;
pub mod grants;
pub mod inbound;
pub mod ledger_check;
pub mod metering;
pub mod projects;
pub mod purchases;
pub mod recharge;
pub mod reconcile;
pub mod stats_backfill;
pub mod streams;
pub mod subscriptions;
pub mod usage;
pub mod webhooks;

pub use failure::Failure;
