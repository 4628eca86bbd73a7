//! The outside world: DynamoDB (`store`), Stripe (`stripe`), Secrets Manager (`secrets`),
//! EventBridge (`events`), SQS (`queue`, webhook deliveries) and developers' webhook endpoints
//! (`outbound`).
//! Each returns its own error type; the HTTP edge converts them once.

pub mod events;
pub mod net;
pub mod outbound;
pub mod queue;
pub mod secrets;
pub mod store;
pub mod stripe;
