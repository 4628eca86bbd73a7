//! The outside world: DynamoDB (`store`), Stripe (`stripe`), Secrets Manager (`secrets`) and
//! EventBridge (`events`).
//! Each returns its own error type; the HTTP edge converts them once.

pub mod events;
pub mod net;
pub mod secrets;
pub mod store;
pub mod stripe;
