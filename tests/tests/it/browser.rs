//! The storefront in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver, started by `scripts/test.sh`, which exports `CHROMEDRIVER_URL`) with
//! fantoccini. Each test has its own app, and uses the page only as a person would: typing in
//! labelled fields (localstripe's stand-in card form included), keys and clicks. Conditions are
//! waited for by polling with a deadline. Each scenario saves a screenshot under
//! `.stack/screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use integration_tests::{eventually, settle, spawn_app, TestApp};
use serde_json::{json, Value};

use crate::subscriptions::{my_subscription, redeliver_invoice};

const GOOD_CARD: &str = "4242424242424242";
/// Saved without trouble, declined when charged (localstripe, as Stripe's test card).
const DECLINED_AT_CHARGE: &str = "4000000000000341";
/// How long the page may take to answer a click (Stripe.js and the API are local).
pub(crate) const UI_SECS: u64 = 20;

const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
    "--lang=en-US",
];

/// One Chromium session on a fresh profile, closed (and its profile removed) when dropped.
pub(crate) struct Browser {
    pub(crate) client: Client,
    scenario: &'static str,
    driver: String,
    session: Option<String>,
    profile: PathBuf,
}

impl Browser {
    pub(crate) async fn open(app: &TestApp, scenario: &'static str) -> Browser {
        Self::open_at(app, scenario, "/").await
    }

    /// A session on the page at `path` of the app's local stack.
    pub(crate) async fn open_at(app: &TestApp, scenario: &'static str, path: &str) -> Browser {
        let driver = std::env::var("CHROMEDRIVER_URL").unwrap_or_else(|_| {
            panic!("CHROMEDRIVER_URL is not set: run the browser tests through scripts/test.sh, which starts chromedriver")
        });
        let profile =
            std::env::temp_dir().join(format!("coffer-chromium-{}", uuid::Uuid::new_v4().simple()));
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        // A new folder: Chromium makes it, so a session that never starts leaves nothing.
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut options = json!({ "args": args });
        // scripts/test.sh names Debian's binary; without it chromedriver finds Chromium itself.
        if let Ok(binary) = std::env::var("CHROMIUM_BINARY") {
            options["binary"] = json!(binary);
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver)
            .await
            .unwrap_or_else(|e| panic!("no Chromium session from chromedriver at {driver}: {e}"));
        let session = client.session_id().await.ok().flatten();
        let browser = Browser {
            client,
            scenario,
            driver,
            session,
            profile,
        };
        browser
            .client
            .goto(&format!("{}{path}", app.base_url))
            .await
            .expect("open the page");
        browser
    }

    pub(crate) async fn find(&self, css: &str) -> Option<fantoccini::elements::Element> {
        self.client.find(Locator::Css(css)).await.ok()
    }

    /// The element's shown text ("" while it is absent or hidden).
    pub(crate) async fn text(&self, css: &str) -> String {
        match self.find(css).await {
            Some(element) => element.text().await.unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Waits until the text of `css` satisfies `want`; the text. On timeout: a screenshot and
    /// a failure that says what the page showed.
    pub(crate) async fn wait_text(
        &self,
        css: &str,
        secs: u64,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let want = &want;
        let found = eventually(secs, move || async move {
            let text = self.text(css).await;
            want(&text).then_some(text)
        })
        .await;
        match found {
            Some(text) => text,
            None => {
                self.fail(&format!("{css} never showed what was waited for"))
                    .await
            }
        }
    }

    pub(crate) async fn fail(&self, what: &str) -> ! {
        self.screenshot(&format!("{}-failed", self.scenario)).await;
        panic!(
            "{}: {what}; the page says {:?}, balance {:?}, subscription {:?}",
            self.scenario,
            self.text("#message").await,
            self.text("#balance").await,
            self.text("#subscription").await,
        );
    }

    /// An enabled element, once the page shows it.
    pub(crate) async fn ready(
        &self,
        locator: Locator<'_>,
        what: &str,
    ) -> fantoccini::elements::Element {
        let found = eventually(UI_SECS, move || async move {
            let element = self.client.find(locator).await.ok()?;
            let usable = element.is_displayed().await.unwrap_or(false)
                && element.is_enabled().await.unwrap_or(false);
            usable.then_some(element)
        })
        .await;
        match found {
            Some(element) => element,
            None => self.fail(&format!("{what} never became usable")).await,
        }
    }

    /// The button whose label starts with `label`.
    pub(crate) async fn button(&self, label: &str) -> fantoccini::elements::Element {
        let xpath = format!("//button[starts-with(normalize-space(.), '{label}')]");
        self.ready(Locator::XPath(&xpath), &format!("the button {label:?}"))
            .await
    }

    /// Types into the field labelled `label` (a `<label for>` or an `aria-label`).
    pub(crate) async fn type_into(&self, label: &str, text: &str) {
        let xpath = format!(
            "//input[@aria-label='{label}' or @id=//label[normalize-space(.)='{label}']/@for]"
        );
        let field = self
            .ready(Locator::XPath(&xpath), &format!("the field {label:?}"))
            .await;
        field.clear().await.expect("clear the field");
        field.send_keys(text).await.expect("type");
    }

    async fn sign_in(&self, name: &str) {
        self.type_into("Your name", name).await;
        // Enter submits the form, as from the keyboard.
        self.type_into_focused(&Key::Enter).await;
        self.wait_text("#balance", UI_SECS, |t| t.starts_with('$'))
            .await;
    }

    pub(crate) async fn type_into_focused(&self, keys: &str) {
        self.client
            .active_element()
            .await
            .expect("the focused element")
            .send_keys(keys)
            .await
            .expect("keys");
    }

    /// Fills localstripe's stand-in card form through the names the page gives its fields.
    async fn fill_card(&self, number: &str) {
        self.type_into("Card number", number).await;
        self.type_into("Expiry month", "12").await;
        self.type_into("Expiry year", "34").await;
        self.type_into("Security code", "123").await;
        self.type_into("Postal code", "42424").await;
    }

    /// Every text the balance has shown since `watch_balance`, repeats folded.
    async fn balances_shown(&self) -> Vec<String> {
        let seen = self
            .client
            .execute("return window.balancesShown || [];", vec![])
            .await
            .expect("read what the balance showed");
        let mut shown: Vec<String> = Vec::new();
        for text in seen
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if shown.last().map(String::as_str) != Some(text) {
                shown.push(text.to_owned());
            }
        }
        shown
    }

    /// Records every text the balance shows from now on (the page is only observed).
    async fn watch_balance(&self) {
        self.client
            .execute(
                "const b = document.getElementById('balance');
                 window.balancesShown = [b.textContent];
                 new MutationObserver(() => window.balancesShown.push(b.textContent))
                   .observe(b, { childList: true, characterData: true, subtree: true });",
                vec![],
            )
            .await
            .expect("watch the balance");
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack/screenshots");
        let _ = self.client.execute("window.scrollTo(0, 0);", vec![]).await;
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{name}.png")), png);
        }
    }
}

impl Browser {
    /// A screenshot of one element (scrolled into view), e.g. a panel for the README.
    pub(crate) async fn screenshot_of(&self, css: &str, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack/screenshots");
        if let Some(element) = self.find(css).await {
            if let Ok(png) = element.screenshot().await {
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(dir.join(format!("{name}.png")), png);
            }
        }
    }
}

impl Drop for Browser {
    /// Ends the WebDriver session (and so Chromium) even when the test failed, then removes the
    /// profile. Blocking and short: one DELETE to chromedriver on loopback.
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            let authority = self
                .driver
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            if let Ok(mut stream) = std::net::TcpStream::connect(&authority) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let request = format!(
                    "DELETE /session/{session} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                if stream.write_all(request.as_bytes()).is_ok() {
                    let mut answer = Vec::new();
                    let _ = stream.read_to_end(&mut answer);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn usd(amount: f64) -> String {
    format!("${amount:.2}")
}

/// Stripe's retry of the purchase's `payment_intent.succeeded` (localstripe may drop one).
async fn redeliver_latest_payment(app: &TestApp, user: &str) {
    let history = app.get("/api/stripe/payment-history", Some(user)).await;
    if let Some(id) = history.body["data"][0]["id"].as_str() {
        app.redeliver_intent_event("payment_intent.succeeded", id)
            .await;
    }
}

#[tokio::test]
async fn buying_a_package_in_the_browser_shows_the_balance_going_up_once() {
    let app = spawn_app().await;
    let page = Browser::open(&app, "buy-package").await;
    page.sign_in("bea").await;
    assert_eq!(page.text("#balance").await, usd(0.0));
    let packages = page.text("#packages").await;
    assert!(
        packages.contains("Standard\n$15.00\n16.5 credits — "),
        "{packages}"
    );
    page.fill_card(GOOD_CARD).await;
    page.watch_balance().await;

    // From the keyboard: the buy button takes Enter.
    page.button("Buy Starter")
        .await
        .send_keys(&Key::Enter)
        .await
        .expect("press Enter on the buy button");
    let page = &page;
    let received = settle(
        move || async move {
            let message = page.text("#message").await;
            message.starts_with("Payment received").then_some(message)
        },
        redeliver_latest_payment(&app, "bea"),
    )
    .await;
    let Some(message) = received else {
        page.fail("the payment never reached the balance").await
    };

    assert_eq!(
        message,
        "Payment received: +5 credits. Your balance is $5.00."
    );
    assert_eq!(app.balance("bea").await, 5.0, "the ledger's balance");
    assert_eq!(page.text("#balance").await, usd(app.balance("bea").await));
    assert_eq!(
        page.balances_shown().await,
        [usd(0.0), usd(5.0)],
        "the balance shown went up once"
    );
    page.wait_text("#history", UI_SECS, |t| t.contains("succeeded"))
        .await;
    app.assert_invariants().await;
    page.screenshot("buy-package").await;
}

#[tokio::test]
async fn a_purchase_whose_answer_was_lost_is_retried_with_its_key_and_charged_once() {
    let app = spawn_app().await;
    let page = Browser::open(&app, "buy-retry").await;
    page.sign_in("cleo").await;
    page.fill_card(GOOD_CARD).await;
    // The first answer of create-payment-intent is lost on its way back: the request reached
    // Coffer (the card is charged), the page only sees the connection fail.
    page.client
        .execute(
            "const real = window.fetch; let dropped = false;
             window.fetch = async (url, options) => {
               const answer = await real(url, options);
               if (!dropped && String(url).includes('create-payment-intent')) {
                 dropped = true;
                 throw new TypeError('connection lost');
               }
               return answer;
             };",
            vec![],
        )
        .await
        .expect("lose one answer");
    page.button("Buy Starter").await.click().await.expect("buy");
    page.wait_text("#message", UI_SECS, |t| t.contains("could not be reached"))
        .await;
    // The user tries again: the same attempt, the same key, so Coffer answers with the intent
    // the first request made instead of charging again.
    page.button("Buy Starter")
        .await
        .click()
        .await
        .expect("buy again");
    let page = &page;
    let received = settle(
        move || async move {
            let message = page.text("#message").await;
            message.starts_with("Payment received").then_some(message)
        },
        redeliver_latest_payment(&app, "cleo"),
    )
    .await;
    if received.is_none() {
        page.fail("the payment never reached the balance").await
    }
    assert_eq!(app.balance("cleo").await, 5.0, "charged and credited once");
    let history = app.get("/api/stripe/payment-history", Some("cleo")).await;
    assert_eq!(
        history.body["data"].as_array().map(Vec::len),
        Some(1),
        "one payment: {}",
        history.body
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_declined_card_shows_its_message_and_the_balance_is_unchanged() {
    let app = spawn_app().await;
    let page = Browser::open(&app, "declined-card").await;
    page.sign_in("dee").await;
    page.fill_card(DECLINED_AT_CHARGE).await;
    page.watch_balance().await;

    page.button("Buy Starter")
        .await
        .click()
        .await
        .expect("click");
    let message = page
        .wait_text("#message", UI_SECS, |t| t.contains("declined"))
        .await;

    assert_eq!(message, "Your card was declined.");
    let class = page
        .find("#message")
        .await
        .expect("the message")
        .attr("class")
        .await
        .expect("class");
    assert_eq!(class.as_deref(), Some("error"), "shown as an error");
    assert_eq!(page.text("#balance").await, usd(0.0));
    assert_eq!(page.balances_shown().await, [usd(0.0)]);
    assert_eq!(app.balance("dee").await, 0.0);
    // The buttons are usable again for another card.
    page.button("Buy Starter").await;
    app.assert_invariants().await;
    page.screenshot("declined-card").await;
}

#[tokio::test]
async fn spending_in_the_browser_shows_the_balance_going_down() {
    let app = spawn_app().await;
    // Arrange: 16.50 of credits, bought through the API and its webhook.
    app.bought("sol", "standard").await;
    let page = Browser::open(&app, "spend").await;
    page.sign_in("sol").await;
    page.wait_text("#balance", UI_SECS, |t| t == "$16.50").await;

    page.type_into("Amount", "1.25").await;
    page.type_into("What for", "one report").await;
    page.type_into_focused(&Key::Enter).await;
    let message = page
        .wait_text("#message", UI_SECS, |t| t.starts_with("Spent"))
        .await;

    assert_eq!(
        message,
        "Spent $1.25 on “one report”. Your balance is $15.25."
    );
    assert_eq!(page.text("#balance").await, usd(15.25));
    assert_eq!(app.balance("sol").await, 15.25);

    // More than the balance: refused in words, nothing spent.
    page.type_into("Amount", "100").await;
    page.type_into("What for", "too much").await;
    page.type_into_focused(&Key::Enter).await;
    let refused = page
        .wait_text("#message", UI_SECS, |t| t.contains("enough credits"))
        .await;
    assert!(!refused.contains("insufficient_credits"), "{refused}");
    assert_eq!(page.text("#balance").await, usd(15.25));
    assert_eq!(app.balance("sol").await, 15.25);
    app.assert_invariants().await;
    page.screenshot("spend").await;
}

#[tokio::test]
async fn subscribing_cancelling_and_resuming_in_the_browser() {
    let app = spawn_app().await;
    let page = Browser::open(&app, "subscribe").await;
    page.sign_in("sue").await;
    page.wait_text("#subscription", UI_SECS, |t| t.contains("no subscription"))
        .await;
    page.fill_card(GOOD_CARD).await;

    page.button("Subscribe to Starter")
        .await
        .click()
        .await
        .expect("click");
    // localstripe's stand-in asks for 3-D Secure when the first invoice needs it.
    let authenticate = "//button[normalize-space(.)='Complete authentication']";
    let page = &page;
    let started = settle(
        move || async move {
            if let Ok(button) = page.client.find(Locator::XPath(authenticate)).await {
                let _ = button.click().await;
            }
            let shown = page.text("#subscription").await;
            shown.starts_with("Starter — renews on").then_some(shown)
        },
        async {
            let now = my_subscription(&app, "sue").await;
            if let Some(id) = now["subscriptionId"].as_str() {
                redeliver_invoice(&app, id).await;
            }
        },
    )
    .await;
    if started.is_none() {
        page.fail("the subscription never showed as renewing").await;
    }
    assert_eq!(my_subscription(&app, "sue").await["status"], "active");
    // Starter includes 5.00 of credits, granted when the first invoice's webhook lands.
    let included = settle(
        move || async move {
            let message = page.text("#message").await;
            message.contains("includes 5 credits").then_some(message)
        },
        async {
            let now = my_subscription(&app, "sue").await;
            if let Some(id) = now["subscriptionId"].as_str() {
                redeliver_invoice(&app, id).await;
            }
        },
    )
    .await;
    if included.is_none() {
        page.fail("the plan's included credits never reached the balance")
            .await;
    }
    assert_eq!(page.text("#balance").await, usd(5.0));
    assert_eq!(app.balance("sue").await, 5.0);

    page.button("Cancel subscription")
        .await
        .click()
        .await
        .expect("click");
    page.wait_text("#subscription", UI_SECS, |t| {
        t.starts_with("Starter — ends on")
    })
    .await;
    let message = page.text("#message").await;
    assert!(message.contains("will not renew"), "{message}");
    assert_eq!(
        my_subscription(&app, "sue").await["cancelAtPeriodEnd"],
        true
    );

    page.button("Resume subscription")
        .await
        .click()
        .await
        .expect("click");
    page.wait_text("#subscription", UI_SECS, |t| {
        t.starts_with("Starter — renews on")
    })
    .await;
    assert_eq!(
        my_subscription(&app, "sue").await["cancelAtPeriodEnd"],
        false
    );
    app.assert_invariants().await;
    page.screenshot("subscribe").await;
}

#[tokio::test]
async fn the_storefront_says_which_credits_expire_and_when() {
    let app = spawn_app().await;
    // Three credits that expire in ten days, and two that never do.
    let expires = coffer::domain::records::now_ms() / 1000 + 10 * 24 * 3600;
    for (key, amount, at) in [("promo", 3, Some(expires)), ("gift", 2, None)] {
        let mut body =
            json!({"userId": "ada", "amount": amount, "reason": "welcome", "idempotencyKey": key});
        if let Some(at) = at {
            body["expiresAt"] = json!(coffer::domain::records::rfc3339(at * 1000));
        }
        let reply = app.backend_grant(&body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let page = Browser::open(&app, "credits-expire").await;
    page.sign_in("ada").await;
    assert_eq!(page.text("#balance").await, usd(5.0));
    let day = time::OffsetDateTime::from_unix_timestamp(expires).expect("a date");
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][usize::from(u8::from(day.month())) - 1];
    let said = page.wait_text("#expiry", UI_SECS, |t| !t.is_empty()).await;
    assert_eq!(
        said,
        format!("3.00 credits expire on {} {month}", day.day())
    );
    page.screenshot("credits-expire").await;
}

/// Clicks localstripe's 3-D Secure dialog's "Complete authentication" when it is shown.
async fn authenticate_if_asked(page: &Browser) {
    let authenticate = "//button[normalize-space(.)='Complete authentication']";
    if let Ok(button) = page.client.find(Locator::XPath(authenticate)).await {
        let _ = button.click().await;
    }
}

#[tokio::test]
async fn auto_recharge_is_set_on_the_page_and_a_recharge_the_bank_asks_about_is_confirmed_there() {
    let app = crate::recharge::offering(3).await;
    let opening = json!({"userId": "val", "amount": 6, "reason": "opening credits", "idempotencyKey": "val-open"});
    let reply = app.backend_grant(&opening).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let page = Browser::open(&app, "auto-recharge").await;
    page.sign_in("val").await;
    page.wait_text("#recharge-state", UI_SECS, |t| t == "Off.")
        .await;
    // A card whose bank asks for 3-D Secure, saved when auto-recharge is turned on.
    page.fill_card("4000002500003155").await;
    page.type_into("When the balance falls below", "5").await;
    page.type_into("Buy credits for", "20").await;
    page.button("Turn on auto-recharge")
        .await
        .click()
        .await
        .expect("click");
    let page = &page;
    let on = eventually(UI_SECS, move || async move {
        authenticate_if_asked(page).await;
        let shown = page.text("#recharge-state").await;
        shown.starts_with("On:").then_some(shown)
    })
    .await;
    match on {
        Some(shown) => assert_eq!(shown, "On: below $5.00, buys credits for $20.00."),
        None => page.fail("auto-recharge never showed as on").await,
    }
    // A spend takes the balance below 5.00: the recharge the stream starts asks the user.
    page.type_into("Amount", "1.5").await;
    page.type_into("What for", "one report").await;
    page.button("Spend").await.click().await.expect("click");
    page.wait_text("#recharge-action-words", 60, |t| {
        t == "Your bank asks you to confirm the recharge of $20.00."
    })
    .await;
    page.screenshot("auto-recharge-asks").await;
    page.button("Confirm the payment")
        .await
        .click()
        .await
        .expect("click");
    let landed = settle(
        move || async move {
            authenticate_if_asked(page).await;
            let shown = page.text("#balance").await;
            (shown == usd(24.5)).then_some(shown)
        },
        async {
            let view = app
                .call(
                    "GET",
                    "/api/credits/auto-recharge",
                    Some(&app.token("val")),
                    None,
                )
                .await;
            let intent = view.body["data"]["authentication"]["paymentIntentId"]
                .as_str()
                .or(view.body["data"]["lastRecharge"]["paymentIntentId"].as_str())
                .map(str::to_owned);
            if let Some(intent) = intent {
                app.redeliver_intent_event("payment_intent.succeeded", &intent)
                    .await;
            }
        },
    )
    .await;
    if landed.is_none() {
        page.fail("the confirmed recharge never reached the balance")
            .await;
    }
    page.wait_text("#recharge-last", 60, |t| {
        t == "The last recharge, $20.00, was paid."
    })
    .await;
    assert_eq!(app.balance("val").await, 24.5);
    page.button("Turn off auto-recharge")
        .await
        .click()
        .await
        .expect("click");
    page.wait_text("#recharge-state", UI_SECS, |t| t == "Off.")
        .await;
    app.assert_invariants().await;
    page.screenshot("auto-recharge").await;
}
