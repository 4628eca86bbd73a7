//! Hostile input over the wire, on every route: each refusal is a 4xx in the envelope, and
//! nothing is written.

use integration_tests::{spawn_app, Reply, TestApp};
use serde_json::Value;

async fn raw(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let response = app
        .http
        .post(format!("{}{path}", app.base_url))
        .bearer_auth(app.token("hostile"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

fn assert_refused(reply: &Reply, status: u16, case: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    assert_eq!(reply.body["success"], false, "{case}");
    assert!(
        reply.body["code"].is_string() && reply.body["error"].is_string(),
        "{case}"
    );
    let text = reply.body.to_string();
    assert!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{case}: {text}"
    );
}

#[tokio::test]
async fn hostile_bodies_get_a_4xx_envelope_on_every_json_route() {
    let app = spawn_app().await;
    app.bought("hostile", "starter").await;
    let json = "application/json";
    for path in [
        "/api/stripe/create-payment-intent",
        "/api/credits/consume",
        "/internal/credits/consume",
    ] {
        let expect = |normal: u16| {
            if path.starts_with("/internal") {
                403
            } else {
                normal
            }
        };
        let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
            ("oversized", json, vec![b' '; 20 * 1024], expect(413)),
            ("far oversized", json, vec![b'x'; 2 * 1024 * 1024], 413),
            (
                "wrong content type",
                "text/plain",
                br#"{"creditPackageId":"starter"}"#.to_vec(),
                expect(400),
            ),
            (
                "form content type",
                "application/x-www-form-urlencoded",
                b"creditPackageId=starter".to_vec(),
                expect(400),
            ),
            (
                "invalid utf-8",
                json,
                vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
                expect(400),
            ),
            ("not an object", json, b"[1,2,3]".to_vec(), expect(400)),
            ("empty", json, Vec::new(), expect(400)),
            (
                "truncated",
                json,
                br#"{"creditPackageId":"sta"#.to_vec(),
                expect(400),
            ),
            (
                "duplicated keys",
                json,
                br#"{"creditPackageId":"starter","creditPackageId":"pro","amount":1,"amount":2}"#
                    .to_vec(),
                expect(400),
            ),
            (
                "nul bytes",
                json,
                b"{\"creditPackageId\":\"st\0arter\"}".to_vec(),
                expect(400),
            ),
        ];
        for (case, content_type, body, status) in cases {
            let reply = raw(&app, path, content_type, body).await;
            assert_refused(&reply, status, &format!("{path} {case}"));
        }
    }

    let create = "/api/stripe/create-payment-intent";
    for id in [
        "../../etc/passwd",
        "pkg/starter",
        "stärter",
        "PACKAGES",
        "PKG#starter",
        "%2e%2e",
        "a\\u0000b",
        "😀",
    ] {
        let body = format!(r#"{{"creditPackageId":"{id}"}}"#);
        let reply = raw(&app, create, "application/json", body.into_bytes()).await;
        // Malformed ids are 400; a well-formed id that names nothing is 404.
        assert!(
            reply.status == 400 || reply.status == 404,
            "{id}: {}",
            reply.body
        );
        assert_refused(&reply, reply.status, id);
    }

    let consume = "/api/credits/consume";
    for amount in [
        "99999999999999999999",
        "1e20",
        "-5",
        "-0.01",
        "0.001",
        "0.015",
        "1.5e-3",
        "NaN",
        "\"5\"",
        "[5]",
        "{}",
        "0",
    ] {
        let body = format!(r#"{{"amount":{amount},"reason":"x","idempotencyKey":"k-{amount}"}}"#);
        let reply = raw(&app, consume, "application/json", body.into_bytes()).await;
        assert_refused(&reply, 400, amount);
    }
    for key in ["\"\"", "5", "null", "[\"k\"]"] {
        let body = format!(r#"{{"amount":1,"reason":"x","idempotencyKey":{key}}}"#);
        assert_refused(
            &raw(&app, consume, "application/json", body.into_bytes()).await,
            400,
            key,
        );
    }
    let long_key = format!(
        r#"{{"amount":1,"reason":"x","idempotencyKey":"{}"}}"#,
        "k".repeat(300)
    );
    assert_refused(
        &raw(&app, consume, "application/json", long_key.into_bytes()).await,
        400,
        "long key",
    );

    // Nothing of the above moved a credit or created a payment.
    assert_eq!(app.balance("hostile").await, 5.0);
    let history = app
        .get("/api/stripe/payment-history", Some("hostile"))
        .await;
    assert_eq!(history.body["data"].as_array().map(Vec::len), Some(1));
    app.assert_invariants().await;
}

#[tokio::test]
async fn hostile_queries_headers_and_webhook_bodies_are_refused_cleanly() {
    let app = spawn_app().await;
    for query in [
        "limit=99999999999999999999",
        "limit=-1",
        "limit=1.5",
        "limit=%00",
        "cursor=%FF%FE",
        "cursor=WyJhIiwiYiIsIlVTRVIjdmljdGltI1BBWSIsImMiXQ",
        "limit=5&limit=6",
    ] {
        let reply = app
            .get(
                &format!("/api/stripe/payment-history?{query}"),
                Some("hostile"),
            )
            .await;
        assert_refused(&reply, 400, query);
    }

    let body = r#"{"creditPackageId":"starter"}"#;
    for key in ["", "   ", "has space"] {
        let reply = app
            .post(
                "/api/stripe/create-payment-intent",
                Some("hostile"),
                body,
                &[("Idempotency-Key", key)],
            )
            .await;
        assert_refused(&reply, 400, &format!("idempotency key {key:?}"));
    }
    let reply = app
        .post(
            "/api/stripe/create-payment-intent",
            Some("hostile"),
            body,
            &[("Idempotency-Key", &"k".repeat(256))],
        )
        .await;
    assert_refused(&reply, 400, "idempotency key too long");

    // A signed body that is not an event, or not UTF-8: 400. An oversized one: 413.
    for payload in [
        b"not json".to_vec(),
        vec![0xff, 0xfe, 0x00],
        br#"{"id":1}"#.to_vec(),
    ] {
        let signature =
            coffer::webhook::sign(&payload, &app.webhook_secret, integration_tests::now());
        let reply = app
            .http
            .post(format!("{}/api/stripe/webhook", app.base_url))
            .header("stripe-signature", signature)
            .body(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 400);
    }
    let huge = vec![b'x'; 600 * 1024];
    let signature = coffer::webhook::sign(&huge, &app.webhook_secret, integration_tests::now());
    let reply = app
        .http
        .post(format!("{}/api/stripe/webhook", app.base_url))
        .header("stripe-signature", signature)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 413);
    app.assert_invariants().await;
}
