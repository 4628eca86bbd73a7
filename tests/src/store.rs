//! What a test app's table and event bus hold: the ledger's invariants, the table's stream, and
//! the billing events on the test's queue.

use std::sync::atomic::Ordering;
use std::time::Duration;

use coffer::app;
use coffer_dev::setup;
use serde_json::Value;

use crate::test_app::TestApp;

impl TestApp {
    /// Counts the table's changes into the stats counters from now on, as the stats function
    /// does deployed (only the tests of stats pay for the polling).
    pub async fn follow_stream(&self) {
        self.follow_stream_with(coffer_dev::streams::Delivery::default())
            .await
    }

    /// [`TestApp::follow_stream`], retrying a failing record as `delivery` says before parking it.
    pub async fn follow_stream_with(&self, delivery: coffer_dev::streams::Delivery) {
        let sdk = app::load_sdk_config().await;
        coffer_dev::streams::start_with(self.app.clone(), &sdk, delivery)
            .await
            .expect("follow the table's stream");
    }

    /// The billing events that reached the test's queue through the bus and its rule, once
    /// `done` holds for them (or `timeout` passed): every event received so far.
    pub async fn billing_events(
        &self,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let queue = self
            .events_queue
            .as_deref()
            .expect("the test app was spawned with events: true");
        let sdk = app::load_sdk_config().await;
        let sqs = setup::sqs_client(&sdk);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let taken = setup::take_events(&sqs, queue, 1)
                .await
                .expect("read the events queue");
            let all = {
                let mut received = self.received_events.lock().expect("events lock");
                received.extend(taken);
                received.clone()
            };
            if done(&all) || std::time::Instant::now() >= deadline {
                return all;
            }
        }
    }

    /// The invariant checker over this test's whole table: every balance equals the sum of its
    /// entries and every payment's entries add up to what it says it moved.
    pub async fn assert_invariants(&self) {
        self.invariant_checks.fetch_add(1, Ordering::SeqCst);
        let snapshot = self.app.app.store.scan_ledger().await.expect("scan");
        let report = coffer::domain::invariants::check(&snapshot);
        assert!(
            report.is_clean(),
            "ledger invariants broken: {:?}",
            report.violations
        );
    }
}
