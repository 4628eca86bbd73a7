//! One handler per function. Each takes the cold-start `App` and a request, and always returns a
//! response in the contract's envelope (errors included): an `Err` never reaches the runtime.

pub(crate) mod balance;
pub(crate) mod billing;
pub(crate) mod checkout;
pub(crate) mod consume_credits;
pub(crate) mod create_payment_intent;
pub(crate) mod credit_packages;
pub(crate) mod developer_api;
pub(crate) mod developer_payments;
pub(crate) mod grants;
pub(crate) mod payment_history;
pub(crate) mod project_config;
pub(crate) mod project_plans;
pub(crate) mod recharge;
pub(crate) mod stripe_webhook;
pub(crate) mod usage;
pub(crate) mod webhooks;

pub use balance::balance;
pub use billing::billing;
pub use consume_credits::{consume_credits, internal_consume_credits};
pub use create_payment_intent::create_payment_intent;
pub use credit_packages::credit_packages;
pub use developer_api::developer_api;
pub use payment_history::payment_history;
pub use project_config::project_config;
pub use project_plans::settings_change_from_json;
pub use stripe_webhook::stripe_webhook;
pub use usage::usage;

use lambda_http::{Body, Request, Response};

use crate::http::ApiError;
use crate::App;

/// The routes (the contract's and the later issues'), as API Gateway maps them to functions;
/// `{name}` is a path parameter. Used by the local router, so
/// that locally each path reaches the very handler its Lambda function runs.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/stripe/credit-packages", "credit-packages"),
    (
        "POST",
        "/api/stripe/create-payment-intent",
        "create-payment-intent",
    ),
    ("GET", "/api/stripe/balance", "balance"),
    ("GET", "/api/stripe/payment-history", "payment-history"),
    ("POST", "/api/stripe/webhook", "stripe-webhook"),
    ("POST", "/api/credits/consume", "consume-credits"),
    (
        "POST",
        "/internal/credits/consume",
        "internal-consume-credits",
    ),
    (
        "POST",
        "/api/v1/payments/stripe/webhooks/{project_id}/{mode}",
        "stripe-webhook",
    ),
    (
        "GET",
        "/api/v1/payments/stripe/projects/{project_id}/config",
        "project-config",
    ),
    (
        "PUT",
        "/api/v1/payments/stripe/projects/{project_id}/config",
        "project-config",
    ),
    (
        "DELETE",
        "/api/v1/payments/stripe/projects/{project_id}/config",
        "project-config",
    ),
    (
        "POST",
        "/api/v1/payments/stripe/projects/{project_id}/validate-credentials",
        "project-config",
    ),
    (
        "GET",
        "/api/v1/payments/stripe/projects/{project_id}/webhook-urls",
        "project-config",
    ),
    ("GET", "/api/v1/payments/projects", "developer-api"),
    ("GET", "/api/v1/payments/subscriptions", "developer-api"),
    ("GET", "/api/v1/payments/stats", "developer-api"),
    ("GET", "/api/v1/payments/transactions", "developer-api"),
    (
        "GET",
        "/api/v1/payments/stripe/projects/{project_id}/payments",
        "developer-api",
    ),
    (
        "GET",
        "/api/v1/payments/stripe/projects/{project_id}/subscriptions",
        "developer-api",
    ),
    (
        "GET",
        "/api/v1/payments/stripe/projects/{project_id}/credit-packages",
        "developer-api",
    ),
    (
        "GET",
        "/api/v1/payments/stripe/projects/{project_id}/credit-packages/{package_id}",
        "developer-api",
    ),
    (
        "PUT",
        "/api/v1/payments/stripe/projects/{project_id}/credit-packages/{package_id}",
        "developer-api",
    ),
    ("GET", "/api/stripe/plans", "billing"),
    ("POST", "/api/stripe/create-customer", "billing"),
    ("POST", "/api/stripe/setup-intent", "billing"),
    ("POST", "/api/stripe/create-subscription", "billing"),
    (
        "POST",
        "/api/v1/payments/stripe/checkout-session",
        "billing",
    ),
    ("POST", "/api/portal/checkout", "billing"),
    ("GET", "/api/v1/payments/stripe/my-subscription", "billing"),
    ("GET", "/api/v1/payments/stripe/my-payments", "billing"),
    (
        "POST",
        "/api/v1/payments/stripe/cancel-subscription",
        "billing",
    ),
    (
        "POST",
        "/api/v1/payments/stripe/update-subscription",
        "billing",
    ),
    ("POST", "/api/v1/payments/stripe/customer-portal", "billing"),
    (
        "PUT",
        "/api/v1/payments/stripe/projects/{project_id}/settings",
        "project-config",
    ),
    (
        "GET",
        "/api/v1/payments/stripe/projects/{project_id}/settings",
        "project-config",
    ),
    (
        "GET",
        "/api/v1/payments/stripe/projects/{project_id}/plans",
        "project-config",
    ),
    (
        "PUT",
        "/api/v1/payments/stripe/projects/{project_id}/plans/{plan_id}",
        "project-config",
    ),
    ("POST", "/internal/usage", "usage"),
    ("POST", "/api/credits/reservations", "consume-credits"),
    ("POST", "/api/credits/reservations/{reservation_id}/capture", "consume-credits"),
    ("POST", "/api/credits/reservations/{reservation_id}/release", "consume-credits"),
    ("POST", "/internal/credits/reservations", "internal-consume-credits"),
    ("POST", "/internal/credits/reservations/{reservation_id}/capture", "internal-consume-credits"),
    ("POST", "/internal/credits/reservations/{reservation_id}/release", "internal-consume-credits"),
    ("POST", "/internal/credits/grants", "internal-consume-credits"),
    ("POST", "/internal/credits/grants/{grant_id}/adjust", "internal-consume-credits"),
    ("POST", "/internal/credits/grants/{grant_id}/void", "internal-consume-credits"),
    ("GET", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}", "developer-api"),
    ("GET", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/balance", "developer-api"),
    ("GET", "/api/v1/payments/stripe/projects/{project_id}/stats/daily", "developer-api"),
    ("PUT", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/alerts", "developer-api"),
    ("GET", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/auto-recharge", "developer-api"),
    ("PUT", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/auto-recharge", "developer-api"),
    ("GET", "/api/credits/auto-recharge", "consume-credits"),
    ("PUT", "/api/credits/auto-recharge", "consume-credits"),
    ("POST", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/grants", "developer-api"),
    ("POST", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/grants/{grant_id}/adjust", "developer-api"),
    ("POST", "/api/v1/payments/stripe/projects/{project_id}/accounts/{account_id}/grants/{grant_id}/void", "developer-api"),
    ("GET", "/api/usage", "usage"),
    ("GET", "/api/v1/payments/stripe/projects/{project_id}/webhooks", "developer-api"),
    ("POST", "/api/v1/payments/stripe/projects/{project_id}/webhooks", "developer-api"),
    ("GET", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}", "developer-api"),
    ("PUT", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}", "developer-api"),
    ("DELETE", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}", "developer-api"),
    ("POST", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}/rotate-secret", "developer-api"),
    ("GET", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}/attempts", "developer-api"),
    ("POST", "/api/v1/payments/stripe/projects/{project_id}/webhooks/{endpoint_id}/resend", "developer-api"),
];

/// Runs the handler of the named function.
pub async fn call(function: &str, app: &App, req: Request) -> Response<Body> {
    match function {
        "credit-packages" => credit_packages(app, req).await,
        "create-payment-intent" => create_payment_intent(app, req).await,
        "balance" => balance(app, req).await,
        "payment-history" => payment_history(app, req).await,
        "stripe-webhook" => stripe_webhook(app, req).await,
        "consume-credits" => consume_credits(app, req).await,
        "internal-consume-credits" => internal_consume_credits(app, req).await,
        "project-config" => project_config(app, req).await,
        "developer-api" => developer_api(app, req).await,
        "billing" => billing(app, req).await,
        "usage" => usage(app, req).await,
        _ => ApiError::NotFound("No such route.".into()).into_response(),
    }
}
