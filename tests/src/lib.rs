//! Test harness for over-the-wire tests. `spawn_app` gives each test its own DynamoDB table, its
//! own secret in the Secrets Manager emulator and its own local router on a free port, with a
//! webhook registered at localstripe, like a fresh database per test. The servers themselves are
//! started by `scripts/test.sh`, which exports their URLs.

mod http;
pub mod proxy;
pub mod receiver;
pub mod seed;
mod settings;
mod store;
mod stripe;
mod test_app;
mod wait;
mod webhooks;

pub use http::Reply;
pub use settings::{
    project_stripe_base, project_stripe_bases, SecretSetup, BACKEND_ROLE, JWT_SECRET,
    METERED_PROJECT, SECRET_REFRESH_SECS, SHORT_USAGE_LEASE_MARGIN_MS, SHORT_USAGE_LEASE_MS,
    STRIPE_KEY, TEST_PAGE_ORIGIN,
};
pub use test_app::{contract, fresh_router, spawn_app, spawn_app_with, Proxies, TestApp};
pub use wait::{eventually, join_all, now, settle, RETRY_AFTER_SECS, WEBHOOK_WAIT_SECS};
