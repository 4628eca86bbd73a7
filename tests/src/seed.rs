//! Data written straight into the test's table over the wire, as the functions write it: the
//! input of a job under test, at whatever size the test needs.

use std::time::Instant;

use coffer::adapters::store::{MeterTag, NewUsage};
use coffer::domain::scope::Scope;

use crate::TestApp;

/// Usage writes in flight at once while seeding.
const SEED_CONCURRENCY: usize = 32;

/// One metered usage to write: the customer billed and the units.
pub struct Metered {
    pub customer: String,
    pub quantity: i64,
}

impl TestApp {
    /// Writes each usage as a metered usage record of `scope` (meter `api_requests`), each
    /// under a fresh key, so that they spread over the meter shards as real usage does. The
    /// seconds it took.
    pub async fn seed_metered_usage(&self, scope: &Scope, usage: &[Metered]) -> f64 {
        let started = Instant::now();
        let store = self.app.app.store_for(scope);
        for chunk in usage.chunks(SEED_CONCURRENCY) {
            let writes = chunk.iter().map(|u| {
                let store = &store;
                async move {
                    let hash = uuid::Uuid::new_v4().simple().to_string();
                    let record = NewUsage {
                        hash: &hash,
                        quantity: u.quantity,
                        answer: "{}",
                        meter: Some(MeterTag {
                            event_name: "api_requests",
                            customer: &u.customer,
                        }),
                    };
                    let written = store
                        .record_leased_usage(&record, "requests", "seeded", "seed")
                        .await
                        .expect("a usage record written");
                    assert!(written, "a fresh key");
                }
            });
            crate::join_all(writes.collect()).await;
        }
        started.elapsed().as_secs_f64()
    }
}
