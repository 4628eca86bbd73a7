//! The outside world: DynamoDB (`store`), Stripe (`stripe`) and Secrets Manager (`secrets`).
//! Each returns its own error type; the HTTP edge converts them once.

pub mod secrets;
pub mod store;
pub mod stripe;
