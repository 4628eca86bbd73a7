//! Every over-the-wire test, in one test binary (one link instead of eight on 2 cores). Each
//! module is one area; each test, one behaviour, on its own table, secret and router.

mod binaries;
mod browser;
mod buckets;
mod cards;
mod concurrency;
mod console;
mod create_intent;
mod custom_amounts;
mod events;
mod existing_apps;
mod faults;
mod hostile;
mod lifecycle;
mod metering;
mod money_defects;
mod outbound_webhooks;
mod projects;
mod purchase;
mod recharge;
mod secrets;
mod storefront;
mod stripe_test_mode;
mod subscriptions;
mod upgrade;
mod usage;
mod webhook;
