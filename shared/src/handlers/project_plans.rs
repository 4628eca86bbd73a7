//! A project's plans and settings, for the developer who owns it (in the configuration
//! function):
//!
//! - `GET …/projects/{project_id}/plans`, `PUT …/plans/{plan_id}`: create or change a plan
//!   (`amount` and `includedCredits` in major units); linking a recurring plan is
//!   `{"priceId": "price_…"}`; `{"meterEvents": {"requests": "api_requests"}}` reports a
//!   metric to a Stripe meter
//! - `GET|PUT …/projects/{project_id}/settings`: `{allowedOrigins, pastDueGraceSeconds,
//!   creditsLowThreshold}` (the threshold in major units; `null` turns `credits.low` off)
//!
//! Both per mode (`test_mode`, default true), as price ids are.

use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::{PlanView, SettingsView};
use crate::domain::buckets::SpendOrder;
use crate::domain::money::{AmountError, Currency};
use crate::domain::packages::{AmountUnit, CustomAmounts};
use crate::domain::plans::PlanUpdate;
use crate::domain::projects::{origin_of, ResponseFormat};
use crate::domain::scope::Scope;
use crate::http::{json_body, ok, ApiError};
use crate::services::projects::{self, CustomAmountsChange, SettingsChange};
use crate::App;

pub async fn plans_or_settings(
    app: &App,
    req: &Request,
    scope: &Scope,
) -> Result<Response<Body>, ApiError> {
    let currency = &app.config.default_currency;
    let path = req.uri().path().trim_end_matches('/');
    let plan_id = req
        .path_parameters_ref()
        .and_then(|p| p.first("plan_id"))
        .map(str::to_owned);
    match (req.method().as_str(), plan_id) {
        ("GET", None) if path.ends_with("/plans") => {
            let plans = projects::plans(app, scope).await?;
            Ok(ok(plans
                .iter()
                .map(|p| PlanView::of(p, currency).with_active(p.active))
                .collect::<Vec<_>>()))
        }
        ("PUT", Some(plan_id)) => {
            let update = plan_update(json_body(req)?, currency)?;
            let plan = projects::save_plan(app, scope, &plan_id, update).await?;
            Ok(ok(PlanView::of(&plan, currency).with_active(plan.active)))
        }
        ("GET", None) => Ok(ok(SettingsView::of(
            &projects::settings(app, scope).await?,
            currency,
        ))),
        ("PUT", None) => {
            let change = settings_change(json_body(req)?, currency)?;
            let settings = projects::save_settings(app, scope, change).await?;
            Ok(ok(SettingsView::of(&settings, currency)))
        }
        _ => Err(ApiError::NotFound("No such route.".into())),
    }
}

/// A settings change as a developer sends it (money in major units), checked.
fn settings_change(body: SettingsBody, currency: &Currency) -> Result<SettingsChange, ApiError> {
    Ok(SettingsChange {
        allowed_origins: body.allowed_origins.map(valid_origins).transpose()?,
        past_due_grace_seconds: body.past_due_grace_seconds,
        credits_low_threshold: body
            .credits_low_threshold
            .map(|threshold| {
                threshold
                    .as_deref()
                    .map(|raw| minor(raw, "creditsLowThreshold", currency))
                    .transpose()
            })
            .transpose()?,
        credits_low_margin: body
            .credits_low_margin
            .map(|margin| {
                margin
                    .as_deref()
                    .map(|raw| minor(raw, "creditsLowMargin", currency))
                    .transpose()
            })
            .transpose()?,
        auto_recharge: body
            .auto_recharge
            .map(|bounds| {
                bounds
                    .map(|b| {
                        Ok::<_, ApiError>(crate::domain::recharge::RechargeBounds {
                            max_per_recharge: minor(
                                &b.max_per_recharge,
                                "autoRecharge.maxPerRecharge",
                                currency,
                            )?,
                            max_per_day: b.max_per_day,
                            default_threshold: b
                                .default_threshold
                                .as_deref()
                                .map(|raw| minor(raw, "autoRecharge.defaultThreshold", currency))
                                .transpose()?,
                            default_amount: b
                                .default_amount
                                .as_deref()
                                .map(|raw| minor(raw, "autoRecharge.defaultAmount", currency))
                                .transpose()?,
                        })
                    })
                    .transpose()
            })
            .transpose()?,
        custom_amounts: body
            .custom_amounts
            .map(|rules| {
                rules
                    .map(|r| {
                        custom_amounts(r, currency)
                            .map(|(rules, unit)| CustomAmountsChange { rules, unit })
                    })
                    .transpose()
            })
            .transpose()?,
        response_format: body
            .response_format
            .as_deref()
            .map(|text| {
                ResponseFormat::parse(text).ok_or_else(|| {
                    ApiError::bad_request("responseFormat must be envelope or plain.")
                })
            })
            .transpose()?,
        payment_sheet_version: body.payment_sheet_version,
        spend_order: body
            .spend_order
            .map(|order| {
                order
                    .as_deref()
                    .map(SpendOrder::parse)
                    .transpose()
                    .map_err(ApiError::bad_request)
            })
            .transpose()?,
    })
}

/// A settings change from its JSON text, as the developer route takes it (for the operator's
/// `coffer-dev settings`, on the deployment's own account); the refusal in words.
pub fn settings_change_from_json(
    text: &str,
    currency: &Currency,
) -> Result<SettingsChange, String> {
    let body: SettingsBody =
        serde_json::from_str(text).map_err(|e| format!("the settings are not valid: {e}"))?;
    settings_change(body, currency).map_err(|e| e.to_string())
}

/// A plan change as a developer sends it: money in major units, as everywhere in the API.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PlanBody {
    name: Option<String>,
    description: Option<String>,
    rank: Option<i32>,
    limits: Option<std::collections::BTreeMap<String, i64>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    included_credits: Option<Box<RawValue>>,
    free: Option<bool>,
    active: Option<bool>,
    /// `null` unlinks.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    price_id: Option<Option<String>>,
    /// `null` makes a tier unpriced.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    amount: Option<Option<Box<RawValue>>>,
    /// Credits per unit beyond the allowance, by metric (major units).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<std::collections::BTreeMap<String, f64>>))]
    overage_prices: Option<std::collections::BTreeMap<String, Box<RawValue>>>,
    /// Stripe meter event names, by metric (usage reported as billing meter events).
    meter_events: Option<std::collections::BTreeMap<String, String>>,
    /// The included credits of a period expire at its end (otherwise they roll over).
    included_credits_expire: Option<bool>,
    /// Rolling over: at most this many earlier included credits are kept when a new period's
    /// come in (major units); `null` keeps them all.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    rollover_cap: Option<Option<Box<RawValue>>>,
    /// A recurring plan's free days before its first payment (1-730); `null`: none. Subscribing
    /// without a card answers with a SetupIntent's client secret to save one.
    #[serde(default, deserialize_with = "present")]
    trial_days: Option<Option<u32>>,
}

/// A field given (even as `null`) is `Some`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The largest plan price or included credits, in minor units.
const MAX_PLAN_MINOR: i64 = 100_000_000_000;

fn minor(raw: &RawValue, name: &str, currency: &Currency) -> Result<i64, ApiError> {
    currency
        .parse_major(raw.get(), MAX_PLAN_MINOR)
        .map_err(|err| match err {
            AmountError::NotANumber => ApiError::bad_request(format!("{name} must be a number.")),
            AmountError::TooPrecise => ApiError::bad_request(format!(
                "{name} is finer than the smallest unit of {currency}."
            )),
            AmountError::TooLarge => ApiError::bad_request(format!("{name} is too large.")),
        })
}

fn custom_amounts(
    body: CustomAmountsBody,
    currency: &Currency,
) -> Result<(CustomAmounts, Option<AmountUnit>), ApiError> {
    let rate = crate::domain::money::parse_scaled(body.credits_per_unit.get(), 4, 100_000_000)
        .map_err(|_| {
            ApiError::bad_request(
                "customAmounts.creditsPerUnit must be a number from 0.0001 to 10000, at most four decimals.",
            )
        })?;
    let unit = body
        .unit
        .as_deref()
        .map(|text| {
            AmountUnit::parse(text)
                .ok_or_else(|| ApiError::bad_request("customAmounts.unit must be major or minor."))
        })
        .transpose()?;
    let rules = CustomAmounts {
        min: minor(&body.min, "customAmounts.min", currency)?,
        max: minor(&body.max, "customAmounts.max", currency)?,
        currencies: body
            .currencies
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect(),
        credits_per_unit_e4: rate,
        unit: unit.unwrap_or_default(),
    };
    Ok((rules, unit))
}

fn plan_update(body: PlanBody, currency: &Currency) -> Result<PlanUpdate, ApiError> {
    Ok(PlanUpdate {
        name: body.name,
        description: body.description,
        rank: body.rank,
        limits: body.limits,
        included_credits: body
            .included_credits
            .as_deref()
            .map(|raw| minor(raw, "includedCredits", currency))
            .transpose()?,
        free: body.free,
        active: body.active,
        price_id: body.price_id,
        amount: body
            .amount
            .map(|amount| {
                amount
                    .as_deref()
                    .map(|raw| minor(raw, "amount", currency))
                    .transpose()
            })
            .transpose()?,
        overage_prices: body
            .overage_prices
            .map(|prices| {
                prices
                    .iter()
                    .map(|(metric, raw)| {
                        Ok((metric.clone(), minor(raw, "overagePrices", currency)?))
                    })
                    .collect::<Result<_, ApiError>>()
            })
            .transpose()?,
        meter_events: body.meter_events,
        included_credits_expire: body.included_credits_expire,
        rollover_cap: body
            .rollover_cap
            .map(|cap| {
                cap.as_deref()
                    .map(|raw| minor(raw, "rolloverCap", currency))
                    .transpose()
            })
            .transpose()?,
        trial_days: body.trial_days,
    })
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SettingsBody {
    allowed_origins: Option<Vec<String>>,
    past_due_grace_seconds: Option<i64>,
    /// `null` turns it off.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    credits_low_threshold: Option<Option<Box<RawValue>>>,
    /// How far above `creditsLowThreshold` a balance must rise for `credits.low` to be armed
    /// again (and `credits.recovered` said); `null`: a tenth of the threshold.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    credits_low_margin: Option<Option<Box<RawValue>>>,
    /// The order spends take from credit buckets in, by criterion: `priority` (higher first),
    /// `expiry` (soonest first), `promotionalFirst` or `paidFirst`, `oldest`. `null`: the
    /// default, `["priority", "expiry", "promotionalFirst", "oldest"]`.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>, example = json!(["priority", "expiry", "promotionalFirst", "oldest"])))]
    spend_order: Option<Option<Vec<String>>>,
    /// Top-ups of an amount the buyer chooses (`{"amount": 7.00, "currency": "usd"}` on
    /// create-payment-intent), within these bounds; `null` turns them off.
    #[serde(default, deserialize_with = "present")]
    custom_amounts: Option<Option<CustomAmountsBody>>,
    /// Auto-recharge's bounds for the project's accounts; `null`: not offered.
    #[serde(default, deserialize_with = "present")]
    auto_recharge: Option<Option<RechargeBoundsBody>>,
    /// How the end-user routes answer: `envelope` (the default) or `plain` (the answer's fields
    /// at the top level and `{"error": <a sentence>}`, for apps written against another backend).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "plain"))]
    response_format: Option<String>,
    /// A Stripe API version (`2024-06-20`): create-payment-intent without `paymentSheet`
    /// answers with PaymentSheet's customer and ephemeral key too, made with this version (for
    /// a mobile app that never asks for them). `null` turns it off.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "2024-06-20"))]
    payment_sheet_version: Option<Option<String>>,
}

/// Auto-recharge's bounds: the most one recharge may charge (major units) and the recharges an
/// account may start a day.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RechargeBoundsBody {
    #[cfg_attr(feature = "openapi", schema(value_type = f64, example = 50.0))]
    max_per_recharge: Box<RawValue>,
    #[cfg_attr(feature = "openapi", schema(example = 3))]
    max_per_day: u32,
    /// The threshold of an account that names none (major units).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 5.0))]
    default_threshold: Option<Box<RawValue>>,
    /// What one recharge charges for an account that names neither an amount nor a package.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 20.0))]
    default_amount: Option<Box<RawValue>>,
}

/// A project's custom-amount rules as a developer sends them: money in major units.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CustomAmountsBody {
    #[cfg_attr(feature = "openapi", schema(value_type = f64, example = 5.0))]
    min: Box<RawValue>,
    #[cfg_attr(feature = "openapi", schema(value_type = f64, example = 500.0))]
    max: Box<RawValue>,
    #[cfg_attr(feature = "openapi", schema(example = json!(["usd"])))]
    currencies: Vec<String>,
    /// Credits for one major unit of the currency (at most four decimals).
    #[cfg_attr(feature = "openapi", schema(value_type = f64, example = 1.25))]
    credits_per_unit: Box<RawValue>,
    /// The unit of a request's `amount`: `major` (`7.00`, the default) or `minor` (`700`, as
    /// apps built on Stripe's PaymentSheet samples send it).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "minor"))]
    unit: Option<String>,
}

/// Origins as `scheme://host[:port]`, nothing after; at most 20.
fn valid_origins(origins: Vec<String>) -> Result<Vec<String>, ApiError> {
    if origins.len() > 20 {
        return Err(ApiError::bad_request(
            "allowedOrigins holds at most 20 origins.",
        ));
    }
    origins
        .into_iter()
        .map(|origin| match origin_of(&origin) {
            Some(parsed) if parsed == origin.trim_end_matches('/').to_ascii_lowercase() => {
                Ok(parsed)
            }
            _ => Err(ApiError::bad_request(format!(
                "{origin} is not an origin such as https://app.example.com."
            ))),
        })
        .collect()
}
