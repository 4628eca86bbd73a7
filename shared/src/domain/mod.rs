//! Pure types and rules, free of AWS, Stripe and HTTP types: money, the ledger's rules, the
//! records users see, credit packages, projects and their scopes, and the ledger's invariants.

pub mod buckets;
pub mod events;
pub mod grants;
pub mod idempotency;
pub mod invariants;
pub mod ledger;
pub mod metering;
pub mod money;
pub mod packages;
pub mod plans;
pub mod projects;
pub mod recharge;
pub mod reconcile;
pub mod records;
pub mod scope;
pub mod stats;
pub mod subscriptions;
pub mod usage;
pub mod webhooks;
