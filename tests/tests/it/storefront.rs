//! The storefront page as the local stack serves it: the files, the local sign-in, and the API
//! paths the page reads. The page itself, in a browser, is tested in `browser.rs`.

use integration_tests::spawn_app;
use serde_json::{json, Value};

#[tokio::test]
async fn the_local_stack_serves_the_page_and_signs_a_name_in() {
    let app = spawn_app().await;
    for (path, content_type, marker) in [
        ("/", "text/html", "<label for=\"name\">Your name</label>"),
        ("/app.js", "text/javascript", "confirmCardSetup"),
        ("/style.css", "text/css", "focus-visible"),
    ] {
        let reply = app
            .http
            .get(format!("{}{path}", app.base_url))
            .send()
            .await
            .expect("served");
        assert_eq!(reply.status(), 200, "{path}");
        let kind = reply
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(kind.starts_with(content_type), "{path}: {kind}");
        let text = reply.text().await.expect("text");
        assert!(text.contains(marker), "{path}");
    }

    let sign_in = |body: Value| {
        let http = app.http.clone();
        let url = format!("{}/_local/token", app.base_url);
        async move {
            let reply = http.post(url).json(&body).send().await.expect("sent");
            let status = reply.status().as_u16();
            (status, reply.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = sign_in(json!({"name": "ivy"})).await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["token"].as_str().expect("token").to_owned();
    // Every path the page calls answers the signed-in user.
    for path in [
        "/api/stripe/credit-packages",
        "/api/stripe/plans",
        "/api/stripe/balance",
        "/api/stripe/payment-history",
    ] {
        let reply = app
            .http
            .get(format!("{}{path}", app.base_url))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sent");
        assert_eq!(reply.status(), 200, "{path}");
    }
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x".repeat(65)}),
        json!({"name": 5}),
    ] {
        let (status, body) = sign_in(bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["success"], false);
        assert_eq!(body["code"], "bad_request");
    }
}
