//! A table written by the single-project version (before projects, facts and `applied`) keeps
//! every balance, payment and history line, readable as the default project's, and its payments
//! keep working.

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::spawn_app;
use serde_json::json;

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(number: i64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

/// The items the previous version wrote for: a 15.00 payment of 16.50 credits, a third of it
/// refunded (5.50 clawed back), a 3.00 grant and a 1.00 spend. Balance 16.50 − 5.50 + 3 − 1 = 13.
fn previous_layout() -> Vec<Vec<(&'static str, AttributeValue)>> {
    vec![
        vec![
            ("pk", s("PAY#pi_legacy1")),
            ("sk", s("PAY")),
            ("intentId", s("pi_legacy1")),
            ("userId", s("olivia")),
            ("packageId", s("standard")),
            ("amount", n(1500)),
            ("currency", s("usd")),
            ("credits", n(1650)),
            ("status", s("partially_refunded")),
            ("createdAt", n(1_790_000_000_000)),
            ("description", s("Standard")),
            ("rev", n(2)),
            ("creditedAt", n(1_790_000_001_000)),
            ("creditEvent", s("evt_1")),
            ("refundedAmount", n(500)),
            ("refundClawed", n(550)),
            ("gsi1pk", s("USER#olivia#PAY")),
            ("gsi1sk", s("001790000000000#pi_legacy1")),
        ],
        vec![
            ("pk", s("USER#olivia")),
            ("sk", s("ENTRY#purchase:pi_legacy1")),
            ("kind", s("purchase")),
            ("amount", n(1650)),
            ("currency", s("usd")),
            ("intentId", s("pi_legacy1")),
            ("eventId", s("evt_1")),
            ("createdAt", n(1_790_000_001_000)),
        ],
        vec![
            ("pk", s("USER#olivia")),
            ("sk", s("ENTRY#refund:pi_legacy1:500")),
            ("kind", s("refund")),
            ("entryId", s("refund:pi_legacy1:500")),
            ("amount", n(-550)),
            ("currency", s("usd")),
            ("intentId", s("pi_legacy1")),
            ("createdAt", n(1_790_000_002_000)),
        ],
        vec![
            ("pk", s("USER#olivia")),
            ("sk", s("ENTRY#grant:0123456789abcdef0123456789abcdef")),
            ("kind", s("grant")),
            ("entryId", s("grant:0123456789abcdef0123456789abcdef")),
            ("amount", n(300)),
            ("currency", s("usd")),
            ("reason", s("welcome")),
            ("createdAt", n(1_790_000_003_000)),
            ("gsi1pk", s("USER#olivia#PAY")),
            (
                "gsi1sk",
                s("001790000003000#grant:0123456789abcdef0123456789abcdef"),
            ),
        ],
        vec![
            ("pk", s("USER#olivia")),
            ("sk", s("ENTRY#spend:fedcba9876543210fedcba9876543210")),
            ("kind", s("spend")),
            ("entryId", s("spend:fedcba9876543210fedcba9876543210")),
            ("amount", n(-100)),
            ("currency", s("usd")),
            ("reason", s("old job")),
            ("createdAt", n(1_790_000_004_000)),
        ],
        vec![
            ("pk", s("USER#olivia")),
            ("sk", s("BALANCE")),
            ("balance", n(1300)),
            ("currency", s("usd")),
            ("updatedAt", n(1_790_000_004_000)),
        ],
    ]
}

#[tokio::test]
async fn a_table_in_the_previous_layout_reads_as_the_default_project_and_keeps_working() {
    let app = spawn_app().await;
    for fields in previous_layout() {
        let item = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        app.app
            .app
            .store
            .put_raw(item)
            .await
            .expect("write an old item");
    }
    app.assert_invariants().await;

    assert_eq!(app.balance("olivia").await, 13.0);
    let history = app.get("/api/stripe/payment-history", Some("olivia")).await;
    assert_eq!(history.status, 200, "{}", history.body);
    let lines = history.body["data"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{}", history.body);
    assert_eq!(lines[0]["kind"], "grant");
    assert_eq!(lines[1]["id"], "pi_legacy1");
    assert_eq!(lines[1]["status"], "partially_refunded");
    assert_eq!(lines[1]["creditAmount"], json!(16.5));

    // Its payment keeps working: the rest refunded claws back exactly the other 11.00.
    let charge = json!({"id": "ch_legacy1", "object": "charge", "amount": 1500, "amount_refunded": 1500,
                        "currency": "usd", "payment_intent": "pi_legacy1", "refunded": true});
    assert_eq!(
        app.deliver_event("charge.refunded", &charge).await.status,
        200
    );
    assert_eq!(app.balance("olivia").await, 2.0);
    assert_eq!(
        app.history_status("olivia", "pi_legacy1").await.as_deref(),
        Some("refunded")
    );
    // And spends go on from the balance it had.
    assert_eq!(app.spend("olivia", json!(2), "new-job").await.status, 200);
    assert_eq!(app.balance("olivia").await, 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn projects_saved_before_the_registry_are_registered_once_for_the_scheduled_jobs() {
    let app = spawn_app().await;
    let store = &app.app.app.store;
    let legacy = format!("legacy{}", &app.table.replace('-', "")[..12]);
    // A project item as the version before the registry wrote it: no gsi2 keys.
    store
        .client()
        .put_item()
        .table_name(store.table())
        .item("pk", s(&format!("PROJECT#{legacy}")))
        .item("sk", s("META"))
        .item("projectId", s(&legacy))
        .item("ownerId", s("dev-old"))
        .item("createdAt", n(1_700_000_000_000))
        .item("gsi1pk", s("DEV#dev-old#PROJECTS"))
        .item("gsi1sk", s(&legacy))
        .send()
        .await
        .expect("an old project item");
    let listed =
        |ids: Vec<coffer::domain::scope::ProjectId>| ids.iter().any(|id| id.as_str() == legacy);
    assert!(!listed(store.all_project_ids().await.expect("registry")));
    assert_eq!(
        store.register_unlisted_projects().await.expect("register"),
        1
    );
    assert!(listed(store.all_project_ids().await.expect("registry")));
    assert_eq!(
        store.register_unlisted_projects().await.expect("again"),
        0,
        "once"
    );
}

#[tokio::test]
async fn a_tier_item_of_the_earlier_layout_holds_only_while_its_purchase_is_paid_for() {
    let app = spawn_app().await;
    let store = &app.app.app.store;
    // The earlier layout: the tier and the one purchase it came from, unchecked. That purchase
    // is not (or no longer) paid for.
    store
        .client()
        .put_item()
        .table_name(store.table())
        .item("pk", s("ACCT#lena"))
        .item("sk", s("TIER"))
        .item("planId", s("pro"))
        .item("intentId", s("pi_refunded_long_ago"))
        .item("updatedAt", n(1_700_000_000_000))
        .send()
        .await
        .expect("an old tier item");
    let now = app
        .get("/api/v1/payments/stripe/my-subscription", Some("lena"))
        .await;
    assert_eq!(now.status, 200, "{}", now.body);
    assert_ne!(now.body["data"]["planId"], "pro", "{}", now.body);
}
