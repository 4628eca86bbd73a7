//! The OpenAPI 3.1 document of every route (feature `openapi`: the local stack and tests, never
//! a deployed function). Schemas come from the wire types the handlers serialise (`api`) and
//! the bodies they parse; the routes come from `handlers::ROUTES`, and a route without a
//! description here fails `document()`, so a new route cannot go undocumented.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema,
    SchemaType, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::server::{ServerBuilder, ServerVariableBuilder};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, Paths,
    Ref, RefOr, Required, ResponseBuilder, ResponsesBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use crate::api::*;
use crate::handlers::{self, ROUTES};
use crate::http::ApiError;

/// Who may call a route, and how.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// An end user's JWT (API Gateway's JWT authorizer).
    User,
    /// A developer's JWT (the developer claim).
    Developer,
    /// An allow-listed IAM principal (SigV4).
    Iam,
    /// Stripe's webhook signature.
    Stripe,
}

/// What a successful answer holds inside the envelope.
enum Data {
    One(RefOr<Schema>),
    List(RefOr<Schema>),
    /// A list with `nextCursor` when there is more.
    Page(RefOr<Schema>),
    /// `{"success": true}` only (the webhook's acknowledgement).
    Ack,
}

/// One route's description.
struct Doc {
    summary: &'static str,
    tag: &'static str,
    auth: Auth,
    query: &'static [&'static str],
    body: Option<RefOr<Schema>>,
    data: Data,
    /// Statuses beyond the ones every route of its kind may answer.
    errors: &'static [u16],
    /// Calls Stripe (502 when Stripe fails).
    stripe: bool,
}

fn schema_ref<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

const SCOPE: &[&str] = &["project_id", "test_mode"];
const SCOPE_ID: &[&str] = &["project_id", "test_mode", "identifier"];
const PAGE: &[&str] = &["project_id", "test_mode", "limit", "cursor"];
const PAGE_ID: &[&str] = &["project_id", "test_mode", "identifier", "limit", "cursor"];
const MODE: &[&str] = &["test_mode"];
const DEV_PAGE: &[&str] = &["test_mode", "limit", "cursor", "status"];
const DEV_ALL: &[&str] = &["project_id", "test_mode"];
const DEV_ALL_PAGE: &[&str] = &["project_id", "test_mode", "limit", "cursor", "status"];
const DEV_LOG: &[&str] = &["test_mode", "limit", "cursor"];
const DEV_DAYS: &[&str] = &["test_mode", "days"];

fn doc(method: &str, path: &str) -> Option<Doc> {
    use Auth::*;
    use Data::*;
    let d = |summary, tag, auth, query, body: Option<RefOr<Schema>>, data, errors, stripe| Doc {
        summary,
        tag,
        auth,
        query,
        body,
        data,
        errors,
        stripe,
    };
    let pkg = schema_ref::<CreditPackageView>;
    Some(match (method, path) {
        ("GET", "/api/stripe/credit-packages") => d("The active credit packages, cheapest first", "Credits", User, SCOPE, None, List(pkg()), &[], false),
        ("POST", "/api/stripe/create-payment-intent") => d("A PaymentIntent for a credit package or a tier (with setupIntentId: charged and confirmed by Coffer)", "Credits", User, SCOPE, Some(schema_ref::<handlers::create_payment_intent::CreateIntentBody>()), One(schema_ref::<PaymentIntentCreated>()), &[402, 409], true),
        ("GET", "/api/stripe/balance") => d("The caller's credit balance", "Credits", User, SCOPE, None, One(schema_ref::<BalanceView>()), &[], false),
        ("GET", "/api/stripe/payment-history") => d("The caller's payments and grants, newest first", "Credits", User, PAGE, None, Page(schema_ref::<HistoryLine>()), &[], false),
        ("POST", "/api/stripe/webhook") => d("Stripe's events for the deployment's own account", "Webhooks", Stripe, &[], Some(schema_ref::<crate::adapters::stripe::webhook::Event>()), Ack, &[], true),
        ("POST", "/api/credits/consume") => d("Spend the caller's credits (exactly once per idempotencyKey)", "Credits", User, SCOPE, Some(schema_ref::<handlers::consume_credits::ConsumeBody>()), One(schema_ref::<SpendResult>()), &[402, 409], false),
        ("POST", "/internal/credits/consume") => d("Spend a user's credits from the app's backend", "Internal", Iam, SCOPE, Some(schema_ref::<handlers::consume_credits::ConsumeBody>()), One(schema_ref::<SpendResult>()), &[402, 409], false),
        ("POST", "/api/v1/payments/stripe/webhooks/{project_id}/{mode}") => d("Stripe's events for a project's account in one mode", "Webhooks", Stripe, &[], Some(schema_ref::<crate::adapters::stripe::webhook::Event>()), Ack, &[], true),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/config") => d("A project's Stripe configuration in a mode, keys masked", "Projects", Developer, MODE, None, One(schema_ref::<ModeView>()), &[], false),
        ("PUT", "/api/v1/payments/stripe/projects/{project_id}/config") => d("Configure a project's Stripe keys in a mode (checked against Stripe first)", "Projects", Developer, MODE, Some(schema_ref::<handlers::project_config::ConfigBody>()), One(schema_ref::<ModeView>()), &[], true),
        ("DELETE", "/api/v1/payments/stripe/projects/{project_id}/config") => d("Deactivate a project's mode (no new payments; webhooks still applied)", "Projects", Developer, MODE, None, One(schema_ref::<ModeView>()), &[], false),
        ("POST", "/api/v1/payments/stripe/projects/{project_id}/validate-credentials") => d("Ask Stripe whether a key (given, or the stored one) works", "Projects", Developer, MODE, Some(schema_ref::<handlers::project_config::ValidateBody>()), One(schema_ref::<KeyValidation>()), &[], true),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/webhook-urls") => d("The webhook URLs and events to set in the Stripe Dashboard", "Projects", Developer, MODE, None, One(schema_ref::<WebhookUrls>()), &[], false),
        ("GET", "/api/v1/payments/projects") => d("The caller's projects and their status per mode", "Projects", Developer, &[], None, List(schema_ref::<ProjectSummary>()), &[], false),
        ("GET", "/api/v1/payments/subscriptions") => d("Subscriptions across the caller's projects, most recently changed first", "Developer reports", Developer, DEV_ALL, None, Page(schema_ref::<SubscriptionLine>()), &[], false),
        ("GET", "/api/v1/payments/stats") => d("Counters per project and mode", "Developer reports", Developer, DEV_ALL, None, List(schema_ref::<ScopeStats>()), &[], false),
        ("GET", "/api/v1/payments/transactions") => d("Payments across the caller's projects, newest first", "Developer reports", Developer, DEV_ALL_PAGE, None, Page(schema_ref::<DeveloperPayment>()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/payments") => d("A project's payments in a mode, newest first", "Developer reports", Developer, DEV_PAGE, None, Page(schema_ref::<DeveloperPayment>()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/subscriptions") => d("A project's subscriptions in a mode", "Developer reports", Developer, MODE, None, Page(schema_ref::<SubscriptionLine>()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/credit-packages") => d("A project's credit packages in a mode, active or not", "Projects", Developer, MODE, None, List(pkg()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/credit-packages/{package_id}") => d("One credit package of a project", "Projects", Developer, MODE, None, One(pkg()), &[], false),
        ("PUT", "/api/v1/payments/stripe/projects/{project_id}/credit-packages/{package_id}") => d("Create or change a credit package (never deleted: deactivate it)", "Projects", Developer, MODE, Some(schema_ref::<handlers::developer_api::PackageBody>()), One(pkg()), &[], false),
        ("GET", "/api/stripe/plans") => d("The active plans, by rank", "Plans", User, SCOPE, None, List(schema_ref::<PlanView>()), &[], false),
        ("POST", "/api/stripe/create-customer") => d("The account's one Stripe customer", "Plans", User, SCOPE, Some(schema_ref::<handlers::billing::CustomerBody>()), One(schema_ref::<CustomerCreated>()), &[409], true),
        ("POST", "/api/stripe/setup-intent") => d("A SetupIntent to save a card with Stripe.js (confirmCardSetup)", "Plans", User, SCOPE, Some(schema_ref::<handlers::billing::SetupBody>()), One(schema_ref::<SetupIntentCreated>()), &[409], true),
        ("POST", "/api/stripe/create-subscription") => d("Subscribe the account to a recurring plan", "Plans", User, SCOPE, Some(schema_ref::<handlers::billing::SubscribeBody>()), One(schema_ref::<SubscriptionCreated>()), &[402, 409], true),
        ("POST", "/api/v1/payments/stripe/checkout-session") => d("A Stripe Checkout session for a plan or a credit package", "Plans", User, SCOPE, Some(schema_ref::<handlers::checkout::CheckoutBody>()), One(schema_ref::<CheckoutCreated>()), &[409], true),
        ("POST", "/api/portal/checkout") => d("The gateway's Checkout session (its own field names)", "Plans", User, SCOPE, Some(schema_ref::<handlers::checkout::GatewayBody>()), One(schema_ref::<GatewayCheckoutCreated>()), &[409], true),
        ("GET", "/api/v1/payments/stripe/my-subscription") => d("The account's plan now and its subscription", "Plans", User, SCOPE_ID, None, One(schema_ref::<MySubscription>()), &[], false),
        ("GET", "/api/v1/payments/stripe/my-payments") => d("The account's purchases and invoices, newest first", "Plans", User, PAGE_ID, None, Page(schema_ref::<AccountPaymentLine>()), &[], false),
        ("POST", "/api/v1/payments/stripe/cancel-subscription") => d("Cancel at the period's end (or at once), or resume", "Plans", User, SCOPE, Some(schema_ref::<handlers::billing::CancelBody>()), One(schema_ref::<SubscriptionCanceled>()), &[], true),
        ("POST", "/api/v1/payments/stripe/update-subscription") => d("Change plan: upgrades now, downgrades at the period's end", "Plans", User, SCOPE, Some(schema_ref::<handlers::billing::UpdateBody>()), One(schema_ref::<SubscriptionUpdated>()), &[409], true),
        ("POST", "/api/v1/payments/stripe/customer-portal") => d("A Stripe customer portal session", "Plans", User, SCOPE, Some(schema_ref::<handlers::checkout::PortalBody>()), One(schema_ref::<PortalCreated>()), &[], true),
        ("PUT", "/api/v1/payments/stripe/projects/{project_id}/settings") => d("Change a project's settings in a mode", "Projects", Developer, MODE, Some(schema_ref::<handlers::project_plans::SettingsBody>()), One(schema_ref::<SettingsView>()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/settings") => d("A project's settings in a mode", "Projects", Developer, MODE, None, One(schema_ref::<SettingsView>()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/plans") => d("A project's plans in a mode, active or not", "Projects", Developer, MODE, None, List(schema_ref::<PlanView>()), &[], false),
        ("PUT", "/api/v1/payments/stripe/projects/{project_id}/plans/{plan_id}") => d("Create or change a plan (money in major units)", "Projects", Developer, MODE, Some(schema_ref::<handlers::project_plans::PlanBody>()), One(schema_ref::<PlanView>()), &[], false),
        ("POST", "/internal/usage") => d("Record (or with dryRun check) a usage against the plan's allowance", "Internal", Iam, SCOPE, Some(schema_ref::<handlers::usage::UsageBody>()), One(schema_ref::<UsageAnswer>()), &[402, 409, 429], false),
        ("GET", "/api/usage") => d("The account's usage per metric this period", "Plans", User, SCOPE_ID, None, One(schema_ref::<UsageOverview>()), &[], false),
        ("POST", "/api/credits/reservations") => d("Reserve the caller's credits for work whose cost is known afterwards (exactly once per idempotencyKey)", "Credits", User, SCOPE, Some(schema_ref::<handlers::grants::ReserveBody>()), One(schema_ref::<ReservationView>()), &[402, 409], false),
        ("POST", "/api/credits/reservations/{reservation_id}/capture") => d("Capture a reservation with the final amount (the rest goes back)", "Credits", User, SCOPE, Some(schema_ref::<handlers::grants::CaptureBody>()), One(schema_ref::<ReservationView>()), &[404, 409], false),
        ("POST", "/api/credits/reservations/{reservation_id}/release") => d("Release a reservation whole", "Credits", User, SCOPE, None, One(schema_ref::<ReservationView>()), &[404, 409], false),
        ("POST", "/internal/credits/reservations") => d("Reserve a user's credits from the app's backend", "Internal", Iam, SCOPE, Some(schema_ref::<handlers::grants::ReserveBody>()), One(schema_ref::<ReservationView>()), &[402, 409], false),
        ("POST", "/internal/credits/reservations/{reservation_id}/capture") => d("Capture a reservation the backend made", "Internal", Iam, SCOPE, Some(schema_ref::<handlers::grants::CaptureBody>()), One(schema_ref::<ReservationView>()), &[404, 409], false),
        ("POST", "/internal/credits/reservations/{reservation_id}/release") => d("Release a reservation the backend made", "Internal", Iam, SCOPE, Some(schema_ref::<handlers::grants::CaptureBody>()), One(schema_ref::<ReservationView>()), &[404, 409], false),
        ("POST", "/internal/credits/grants") => d("Grant a user promotional credits from the app's backend", "Internal", Iam, SCOPE, Some(schema_ref::<handlers::grants::GrantBody>()), One(schema_ref::<GrantView>()), &[409], false),
        ("POST", "/internal/credits/grants/{grant_id}/adjust") => d("Adjust a grant (never taking back what was spent)", "Internal", Iam, SCOPE, Some(schema_ref::<handlers::grants::GrantChangeBody>()), One(schema_ref::<GrantView>()), &[404, 409], false),
        ("POST", "/internal/credits/grants/{grant_id}/void") => d("Void what is left of a grant", "Internal", Iam, SCOPE, Some(schema_ref::<handlers::grants::GrantChangeBody>()), One(schema_ref::<GrantView>()), &[404, 409], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/auto-recharge") => d("An account's auto-recharge settings and where it stands", "Developer accounts", Developer, MODE, None, One(schema_ref::<RechargeView>()), &[], false),
        ("PUT", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/auto-recharge") => d("Change an account's auto-recharge settings (turning it off is the developer's)", "Developer accounts", Developer, MODE, Some(schema_ref::<handlers::recharge::RechargeBody>()), One(schema_ref::<RechargeView>()), &[], false),
        ("GET", "/api/credits/auto-recharge") => d("The caller's auto-recharge settings and where it stands", "Credits", User, SCOPE, None, One(schema_ref::<RechargeView>()), &[], false),
        ("PUT", "/api/credits/auto-recharge") => d("Change the caller's auto-recharge settings: below the threshold, the saved card is charged off-session for one recharge at a time", "Credits", User, SCOPE, Some(schema_ref::<handlers::recharge::RechargeBody>()), One(schema_ref::<RechargeView>()), &[], false),
        ("PUT", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/alerts") => d("Set an account's own low-balance threshold (over its project's; null removes it); its alert is armed again", "Developer accounts", Developer, MODE, Some(schema_ref::<handlers::developer_api::AlertBody>()), One(schema_ref::<AlertView>()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}") => d("An account at a glance: balance and buckets, subscription, usage against its plan's limits, newest ledger entries and payments", "Developer accounts", Developer, MODE, None, One(schema_ref::<AccountOverview>()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/stats/daily") => d("A project's stats per day (UTC) in a mode: revenue, refunds, credits sold and spent, active subscriptions", "Developer reports", Developer, DEV_DAYS, None, One(schema_ref::<DailyStats>()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/balance") => d("An account's balance with its buckets", "Developer accounts", Developer, MODE, None, One(schema_ref::<BalanceView>()), &[], false),
        ("POST", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/grants") => d("Grant an account promotional credits (exactly once per idempotencyKey)", "Developer accounts", Developer, MODE, Some(schema_ref::<handlers::grants::GrantBody>()), One(schema_ref::<GrantView>()), &[409], false),
        ("POST", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/grants/{grant_id}/adjust") => d("Adjust a grant (never taking back what was spent)", "Developer accounts", Developer, MODE, Some(schema_ref::<handlers::grants::GrantChangeBody>()), One(schema_ref::<GrantView>()), &[404, 409], false),
        ("POST", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/grants/{grant_id}/void") => d("Void what is left of a grant", "Developer accounts", Developer, MODE, Some(schema_ref::<handlers::grants::GrantChangeBody>()), One(schema_ref::<GrantView>()), &[404, 409], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/webhooks") => d("A project's webhook endpoints in a mode", "Developer webhooks", Developer, MODE, None, List(schema_ref::<WebhookEndpointView>()), &[], false),
        ("POST", "/api/v1/payments/stripe/projects/{project_id}/webhooks") => d("Add a webhook endpoint: its signing secret is in the answer, once", "Developer webhooks", Developer, MODE, Some(schema_ref::<handlers::webhooks::EndpointBody>()), One(schema_ref::<WebhookEndpointSecret>()), &[409], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}") => d("One webhook endpoint", "Developer webhooks", Developer, MODE, None, One(schema_ref::<WebhookEndpointView>()), &[], false),
        ("PUT", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}") => d("Change a webhook endpoint's URL or event types, or turn it off or on", "Developer webhooks", Developer, MODE, Some(schema_ref::<handlers::webhooks::EndpointBody>()), One(schema_ref::<WebhookEndpointView>()), &[], false),
        ("DELETE", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}") => d("Delete a webhook endpoint", "Developer webhooks", Developer, MODE, None, One(schema_ref::<WebhookEndpointView>()), &[], false),
        ("POST", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}/rotate-secret") => d("A new signing secret (in the answer, once); the old one signs beside it for 24 h", "Developer webhooks", Developer, MODE, None, One(schema_ref::<WebhookEndpointSecret>()), &[], false),
        ("GET", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}/attempts") => d("An endpoint's delivery attempts (kept 30 days), newest first", "Developer webhooks", Developer, DEV_LOG, None, Page(schema_ref::<WebhookAttemptView>()), &[], false),
        ("POST", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}/resend") => d("Send an event (kept 30 days) to the endpoint again", "Developer webhooks", Developer, MODE, Some(schema_ref::<handlers::webhooks::ResendBody>()), One(schema_ref::<WebhookEndpointView>()), &[409, 503], false),
        _ => return None,
    })
}

/// Every schema the document names: the roots and everything they refer to.
fn schemas() -> Vec<(String, RefOr<Schema>)> {
    let mut all = Vec::new();
    macro_rules! roots {
        ($($ty:ty),* $(,)?) => {$(
            all.push((<$ty>::name().into_owned(), <$ty>::schema()));
            <$ty>::schemas(&mut all);
        )*};
    }
    roots!(
        CreditPackageView,
        BalanceView,
        BucketView,
        GrantView,
        ReservationView,
        AlertView,
        RechargeView,
        crate::api::LastRecharge,
        crate::api::RechargeAuthentication,
        HistoryLine,
        DeveloperPayment,
        SpendResult,
        PaymentIntentCreated,
        CustomerCreated,
        SetupIntentCreated,
        PlanView,
        SubscriptionCreated,
        MySubscription,
        AccountPaymentLine,
        SubscriptionCanceled,
        SubscriptionUpdated,
        CheckoutCreated,
        GatewayCheckoutCreated,
        PortalCreated,
        UsageAnswer,
        UsageOverview,
        ModeView,
        ProjectSummary,
        KeyValidation,
        WebhookUrls,
        SettingsView,
        ScopeStats,
        DailyStats,
        AccountOverview,
        SubscriptionLine,
        WebhookEndpointView,
        WebhookEndpointSecret,
        WebhookAttemptView,
        handlers::webhooks::EndpointBody,
        handlers::webhooks::ResendBody,
        crate::adapters::stripe::webhook::Event,
        handlers::create_payment_intent::CreateIntentBody,
        handlers::consume_credits::ConsumeBody,
        handlers::grants::GrantBody,
        handlers::developer_api::AlertBody,
        handlers::recharge::RechargeBody,
        handlers::grants::GrantChangeBody,
        handlers::grants::ReserveBody,
        handlers::grants::CaptureBody,
        handlers::project_config::ConfigBody,
        handlers::project_config::ValidateBody,
        handlers::developer_api::PackageBody,
        handlers::billing::CustomerBody,
        handlers::billing::SetupBody,
        handlers::billing::SubscribeBody,
        handlers::billing::CancelBody,
        handlers::billing::UpdateBody,
        handlers::checkout::CheckoutBody,
        handlers::checkout::GatewayBody,
        handlers::checkout::PortalBody,
        handlers::project_plans::SettingsBody,
        handlers::project_plans::PlanBody,
        handlers::usage::UsageBody,
    );
    all.push(("Error".into(), error_schema()));
    all.push(("PlainError".into(), plain_error_schema()));
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|a, b| a.0 == b.0);
    all
}

/// The envelope of every error: `{"success": false, "error": <a sentence>, "code": <code>}`.
fn error_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .description(Some(
            "Every error: a sentence for people and a stable code for programs.",
        ))
        .property(
            "success",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([false])),
        )
        .required("success")
        .property("error", error_sentence())
        .required("error")
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(
                    ApiError::CODES
                        .iter()
                        .copied()
                        .chain(ROUTER_CODES.iter().copied()),
                ))
                .examples([serde_json::json!("insufficient_credits")]),
        )
        .required("code")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

/// Codes answered before any handler runs (an unknown path or method).
const ROUTER_CODES: &[&str] = &["method_not_allowed"];

/// The success envelope around `data`.
fn envelope(data: &Data) -> RefOr<Schema> {
    let success = ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]));
    let object = ObjectBuilder::new()
        .property("success", success)
        .required("success")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    match data {
        Data::Ack => object.into(),
        Data::One(schema) => object
            .property("data", schema.clone())
            .required("data")
            .into(),
        Data::List(schema) | Data::Page(schema) => {
            let list = ArrayBuilder::new().items(schema.clone());
            let object = object.property("data", list).required("data");
            if matches!(data, Data::Page(_)) {
                object
                    .property(
                        "nextCursor",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .description(Some(
                                "Give it as `cursor` for the next page; absent on the last.",
                            )),
                    )
                    .into()
            } else {
                object.into()
            }
        }
    }
}

/// The wire types whose `clientSecret` the plain format also names `client_secret`.
const ALIASED: &[&str] = &[
    "PaymentIntentCreated",
    "SetupIntentCreated",
    "SubscriptionCreated",
    "SubscriptionUpdated",
];

/// An end-user route's answer in a project's plain format (`responseFormat: plain`): the
/// answer's own fields (with `client_secret` beside `clientSecret`), or the list itself.
fn plain_success(data: &Data) -> RefOr<Schema> {
    match data {
        Data::Ack => ObjectBuilder::new().into(),
        Data::One(schema) => {
            let aliased = matches!(schema, RefOr::Ref(r)
                if ALIASED.iter().any(|name| r.ref_location.ends_with(&format!("/{name}"))));
            if aliased {
                AllOfBuilder::new()
                    .item(schema.clone())
                    .item(ObjectBuilder::new().property(
                        "client_secret",
                        ObjectBuilder::new()
                            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                            .description(Some(
                                "`clientSecret` again, by the name apps written for other backends read.",
                            )),
                    ))
                    .into()
            } else {
                schema.clone()
            }
        }
        Data::List(schema) | Data::Page(schema) => ArrayBuilder::new().items(schema.clone()).into(),
    }
}

/// An error's sentence, in either format.
fn error_sentence() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .examples([serde_json::json!("Not enough credits.")])
}

/// A plain-format error: `{"error": <a sentence>}`.
fn plain_error_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .description(Some(
            "An error of an end-user route in a project's plain format: the same sentence and status, no code.",
        ))
        .property("error", error_sentence())
        .required("error")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

/// Every error status a route may answer.
const ERROR_STATUSES: &[u16] = &[400, 401, 402, 403, 404, 409, 413, 429, 500, 502, 503];

/// What each error status means, for the document.
fn error_meaning(status: u16) -> &'static str {
    match status {
        400 => "The request is malformed (`invalid_request`), or the Stripe signature or key is wrong (`invalid_signature`, `invalid_credentials`).",
        401 => "No valid token (`unauthorized`).",
        402 => "Not enough credits (`insufficient_credits`) or the card was declined (`card_declined`).",
        403 => "The caller may not do this (`forbidden`).",
        404 => "No such project, mode, package, plan or record (`not_found`).",
        409 => "It conflicts with what exists, or the key was used for another request (`conflict`).",
        413 => "The body is too large (`payload_too_large`).",
        429 => "Beyond the plan's allowance, with no overage (`limit_reached`).",
        500 => "Coffer failed (`internal_error`); nothing was half-done.",
        502 => "Stripe failed (`stripe_error`).",
        503 => "A dependency is unavailable, or units are held by other instances (`service_unavailable`, `retry_later`): try again.",
        _ => "An error.",
    }
}

/// A project id as `ProjectId::parse` takes it: it starts with a lowercase letter or a digit.
const PROJECT_ID: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

fn string_pattern(pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .into()
}

fn query_parameter(name: &str) -> ParameterBuilder {
    let (schema, description): (RefOr<Schema>, &str) = match name {
        "project_id" => (
            string_pattern(PROJECT_ID),
            "The project (default: the deployment's own account).",
        ),
        "test_mode" => (
            ObjectBuilder::new().schema_type(Type::Boolean).into(),
            "Stripe's test mode (true) or live mode (false).",
        ),
        "identifier" => (
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(255))
                .into(),
            "The account: the caller's own id or `org:<id>` of one of their organisations.",
        ),
        "limit" => (
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(100))
                .into(),
            "Items per page (1–100).",
        ),
        "days" => (
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(90))
                .into(),
            "How many days up to today (1–90, default 30).",
        ),
        "cursor" => (
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(512))
                .into(),
            "The previous page's `nextCursor`.",
        ),
        _ => (
            schema_ref::<crate::domain::records::PaymentStatus>(),
            "Only payments in this status.",
        ),
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
}

/// The OpenAPI document of every route. `None` names a route without a description.
pub fn try_document() -> Result<OpenApi, String> {
    let mut paths = Paths::new();
    for (method, path, _function) in ROUTES {
        let doc = doc(method, path).ok_or_else(|| format!("{method} {path} is not described"))?;
        let mut op = OperationBuilder::new()
            .summary(Some(doc.summary))
            .tag(doc.tag)
            .operation_id(Some(operation_id(method, path)));
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let schema: RefOr<Schema> = match name {
                    "mode" => schema_ref::<crate::domain::scope::Mode>(),
                    // ProjectId::parse, valid_plan_id, valid_package_id.
                    "project_id" => string_pattern(PROJECT_ID),
                    "plan_id" => string_pattern("^[a-z0-9_-]{1,64}$"),
                    _ => string_pattern("^[A-Za-z0-9_-]{1,64}$"),
                };
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(schema)),
                );
            }
        }
        for name in doc.query {
            op = op.parameter(query_parameter(name));
        }
        if doc.auth == Auth::Stripe {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("Stripe-Signature")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::True)
                    .description(Some("Stripe's signature of the body (`t=…,v1=…`)."))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if *path == "/api/stripe/create-payment-intent" {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some("The same key answers with the same PaymentIntent."))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .max_length(Some(255)),
                    )),
            );
        }
        if let Some(body) = &doc.body {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(
                        if matches!(*method, "PUT") || doc.auth == Auth::Stripe {
                            Required::True
                        } else {
                            Required::False
                        },
                    ))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(body.clone())).build(),
                    )
                    .build(),
            ));
        }
        // End-user routes answer in the project's format: the envelope, or plain.
        let success = if doc.auth == Auth::User {
            let mut ok = ResponseBuilder::new()
                .description("Done: in the envelope, or (a project set to `responseFormat: plain`) the answer's own fields.")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(
                            AnyOfBuilder::new()
                                .item(envelope(&doc.data))
                                .item(plain_success(&doc.data)),
                        ))
                        .build(),
                );
            if matches!(doc.data, Data::Page(_)) {
                ok = ok.header(
                    "Next-Cursor",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some("Plain format: give it as `cursor` for the next page; absent on the last."))
                        .build(),
                );
            }
            ok
        } else {
            ResponseBuilder::new()
                .description("Done, in the envelope.")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(envelope(&doc.data)))
                        .build(),
                )
        };
        let mut responses = ResponsesBuilder::new().response("200", success);
        let mut statuses: Vec<u16> = vec![400, 404, 500, 503];
        if doc.auth != Auth::Stripe {
            statuses.extend([401, 403]);
        }
        if doc.body.is_some() {
            statuses.push(413);
        }
        if doc.stripe {
            statuses.push(502);
        }
        statuses.extend(doc.errors);
        statuses.sort_unstable();
        statuses.dedup();
        for status in statuses {
            responses = responses.response(
                status.to_string(),
                RefOr::Ref(Ref::new(format!(
                    "#/components/responses/{}{status}",
                    if doc.auth == Auth::User {
                        "UserError"
                    } else {
                        "Error"
                    }
                ))),
            );
        }
        op = op.responses(responses.build());
        op = op.security(security(doc.auth));
        let http = match *method {
            "GET" => HttpMethod::Get,
            "POST" => HttpMethod::Post,
            "PUT" => HttpMethod::Put,
            _ => HttpMethod::Delete,
        };
        paths.add_path_operation(path, vec![http], op.build());
    }

    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas())
        .responses_from_iter(ERROR_STATUSES.iter().map(|status| {
            (
                format!("Error{status}"),
                ResponseBuilder::new()
                    .description(error_meaning(*status))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(schema_ref_named("Error")))
                            .build(),
                    )
                    .build(),
            )
        }))
        // An end-user route's errors: in the envelope, or in its project's plain format.
        .responses_from_iter(ERROR_STATUSES.iter().map(|status| {
            (
                format!("UserError{status}"),
                ResponseBuilder::new()
                    .description(format!(
                        "{} In the envelope, or `{{\"error\": <the sentence>}}` for a project set to the plain format.",
                        error_meaning(*status)
                    ))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(
                                AnyOfBuilder::new()
                                    .item(schema_ref_named("Error"))
                                    .item(schema_ref_named("PlainError")),
                            ))
                            .build(),
                    )
                    .build(),
            )
        }))
        .security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A JWT from the app's identity provider, verified by API Gateway's JWT authorizer; the user is its `sub`. Developer routes need the developer claim.")) 
                    .build(),
            ),
        )
        .security_scheme(
            "iam",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "AWS Signature Version 4 (API Gateway's IAM authorization); the caller must be an allow-listed role.",
            ))),
        )
        .security_scheme(
            "stripeSignature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Stripe-Signature",
                "Stripe's HMAC-SHA256 signature of the raw body with the webhook secret.",
            ))),
        );
    let tags = [
        (
            "Credits",
            "Credit packages, purchases, the balance and spending it.",
        ),
        (
            "Plans",
            "Plans, subscriptions, Checkout, the customer portal and usage.",
        ),
        (
            "Internal",
            "Calls from the app's own backend, authorized by IAM.",
        ),
        (
            "Webhooks",
            "Stripe's events, signed with the webhook secret.",
        ),
        (
            "Projects",
            "A developer's projects: Stripe keys, catalog, plans and settings per mode.",
        ),
        (
            "Developer reports",
            "Payments, subscriptions and counters across a developer's projects.",
        ),
        (
            "Developer webhooks",
            "A project's own webhook endpoints: Standard Webhooks signatures, retries, the delivery log.",
        ),
        (
            "Developer accounts",
            "An account of a developer's project: its balance and buckets, and grants of promotional credits.",
        ),
    ]
    .into_iter()
    .map(|(name, description)| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    });
    let servers = [
        ServerBuilder::new()
            .url("https://{apiId}.execute-api.{region}.amazonaws.com")
            .description(Some("A deployed stack (the template's ApiUrl output)."))
            .parameter(
                "apiId",
                ServerVariableBuilder::new()
                    .default_value("your-api-id")
                    .description(Some("The HTTP API's id.")),
            )
            .parameter(
                "region",
                ServerVariableBuilder::new()
                    .default_value("us-east-1")
                    .description(Some("The AWS Region it is deployed in.")),
            )
            .build(),
        ServerBuilder::new()
            .url("http://127.0.0.1:3000")
            .description(Some("The local stack (scripts/stack.sh)."))
            .build(),
    ];
    Ok(OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Coffer")
                .version(env!("CARGO_PKG_VERSION"))
                .license(Some(
                    LicenseBuilder::new()
                        .name(env!("CARGO_PKG_LICENSE"))
                        .identifier(Some(env!("CARGO_PKG_LICENSE")))
                        .build(),
                ))
                .description(Some(
                    "Prepaid credits, plans, subscriptions and usage limits on Stripe. Every answer is \
                     JSON in an envelope: `{\"success\": true, \"data\": …}` or `{\"success\": false, \
                     \"error\": <a sentence>, \"code\": <a code>}`. A project may set its end-user \
                     routes to the plain format (`responseFormat: plain` in its settings), for apps \
                     written against another backend: the answer's own fields at the top level (a list \
                     is the array, its next cursor the `Next-Cursor` header; `client_secret` beside \
                     `clientSecret`) and `{\"error\": <a sentence>}`. Money is shown in major units of \
                     its currency.",
                )),
        )
        .servers(Some(servers))
        .paths(paths)
        .components(Some(components.build()))
        .tags(Some(tags))
        .build())
}

/// The document as committed (`openapi.json`): pretty JSON with a final newline.
pub fn document_json() -> Result<String, String> {
    let document = try_document()?;
    let mut text = document.to_pretty_json().map_err(|e| e.to_string())?;
    text.push('\n');
    Ok(text)
}

fn schema_ref_named(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn security(auth: Auth) -> SecurityRequirement {
    let name = match auth {
        Auth::User | Auth::Developer => "jwt",
        Auth::Iam => "iam",
        Auth::Stripe => "stripeSignature",
    };
    SecurityRequirement::new::<_, [&str; 0], &str>(name, [])
}

/// `get_api_stripe_balance`-style ids, unique per method and path.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.extend(part.chars().filter(|c| *c != '{' && *c != '}').map(|c| {
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        }));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routes_that_follow_a_projects_format_are_the_end_user_routes() {
        for (method, path, _) in ROUTES {
            let doc = doc(method, path).expect("described");
            assert_eq!(
                crate::formats::end_user_route(path),
                doc.auth == Auth::User,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn every_route_is_described_once() {
        let document = try_document().expect("every route described");
        let json = serde_json::to_value(&document).expect("json");
        let mut described = 0;
        for (method, path, _) in ROUTES {
            let op = &json["paths"][path][method.to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {path}");
            described += 1;
        }
        assert_eq!(described, ROUTES.len());
        assert_eq!(json["openapi"], "3.1.0");
    }

    #[test]
    fn the_error_codes_are_every_code_the_api_has() {
        let document = serde_json::to_value(try_document().unwrap()).unwrap();
        let codes = &document["components"]["schemas"]["Error"]["properties"]["code"]["enum"];
        for code in ApiError::CODES {
            assert!(
                codes.as_array().unwrap().iter().any(|c| c == code),
                "{code}"
            );
        }
    }
}
