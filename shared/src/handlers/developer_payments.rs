//! Payments for developers: one project's in a mode
//! (`GET …/stripe/projects/{project_id}/payments`) and all of the caller's projects'
//! (`GET /api/v1/payments/transactions`), newest first, filterable by `status` (and, across
//! projects, by `project_id` and `test_mode`), paginated with `limit` (1–100, default 20) and an
//! opaque `cursor`. Across projects, each scope's newest lines are merged by time; the cursor is
//! the time and id of the last line shown, which every scope's listing goes on from.

use lambda_http::{Request, RequestExt};

use crate::api::DeveloperPayment;
use crate::auth::UserId;
use crate::domain::records::PaymentStatus;
use crate::domain::scope::{Mode, ProjectId, Scope};
use crate::http::ApiError;
use crate::services::developers::{self, PaymentQuery};
use crate::App;

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

fn query_value<'a>(req: &'a Request, name: &str) -> Result<Option<&'a str>, ApiError> {
    let Some(query) = req.query_string_parameters_ref() else {
        return Ok(None);
    };
    match query.all(name) {
        Some(values) if values.len() > 1 => {
            Err(ApiError::bad_request(format!("{name} may be given once.")))
        }
        Some(values) => Ok(values.first().copied().filter(|v| !v.is_empty())),
        None => Ok(None),
    }
}

/// `limit`, `cursor` (bound to the developer) and `status` from the query.
pub fn payment_query(req: &Request, developer: &UserId) -> Result<PaymentQuery, ApiError> {
    let limit = match query_value(req, "limit")? {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit must be a whole number from 1 to 100."))?,
    };
    let before = query_value(req, "cursor")?
        .map(|cursor| developers::decode_cursor(developer, cursor))
        .transpose()?;
    let status = query_value(req, "status")?
        .map(|text| {
            PaymentStatus::parse(text).ok_or_else(|| {
                ApiError::bad_request(
                    "status must be one of pending, succeeded, failed, canceled, refunded, \
                     partially_refunded, disputed.",
                )
            })
        })
        .transpose()?;
    Ok(PaymentQuery {
        limit,
        before,
        status,
    })
}

/// One page over several scopes, as the developer sees it, and the next cursor.
pub async fn merged_page(
    app: &App,
    developer: &UserId,
    scopes: &[Scope],
    query: &PaymentQuery,
) -> Result<(Vec<DeveloperPayment>, Option<String>), ApiError> {
    let (lines, next) = developers::payments(app, developer, scopes, query).await?;
    Ok((
        lines
            .iter()
            .map(|(scope, payment)| DeveloperPayment::of(scope, payment))
            .collect(),
        next,
    ))
}

/// The scopes the cross-project listing covers: the caller's projects, each mode it was
/// configured in, narrowed by `project_id` and `test_mode`.
pub async fn developer_scopes(
    app: &App,
    req: &Request,
    developer: &UserId,
) -> Result<Vec<Scope>, ApiError> {
    let only_project = query_value(req, "project_id")?
        .map(|text| {
            ProjectId::parse(text).ok_or_else(|| ApiError::bad_request("project_id is malformed."))
        })
        .transpose()?;
    let only_mode = query_value(req, "test_mode")?
        .map(|text| {
            Mode::from_test_mode(text)
                .ok_or_else(|| ApiError::bad_request("test_mode must be true or false."))
        })
        .transpose()?;
    Ok(developers::scopes(app, developer, only_project.as_ref(), only_mode).await?)
}
