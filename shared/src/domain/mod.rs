//! Pure types and rules, free of AWS, Stripe and HTTP types: money, the ledger's rules, the
//! records users see, credit packages and the ledger's invariants.

pub mod invariants;
pub mod ledger;
pub mod money;
pub mod packages;
pub mod records;
