//! Payments for developers: one project's in a mode
//! (`GET …/stripe/projects/{project_id}/payments`) and all of the caller's projects'
//! (`GET /api/v1/payments/transactions`), newest first, filterable by `status` (and, across
//! projects, by `project_id` and `test_mode`), paginated with `limit` (1–100, default 20) and an
//! opaque `cursor`. Across projects, each scope's newest lines are merged by time; the cursor is
//! the time and id of the last line shown, which every scope's listing goes on from.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lambda_http::{Request, RequestExt};

use crate::adapters::store::{hash_parts, valid_boundary};
use crate::api::DeveloperPayment;
use crate::auth::UserId;
use crate::domain::records::PaymentStatus;
use crate::domain::scope::{Mode, ProjectId, Scope};
use crate::http::ApiError;
use crate::App;

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// What the listing is asked for.
pub struct PaymentQuery {
    pub limit: usize,
    pub before: Option<String>,
    pub status: Option<PaymentStatus>,
}

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
        .map(|cursor| decode_cursor(developer, cursor))
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

fn developer_tag(developer: &UserId) -> String {
    hash_parts(&["payments-cursor", developer.as_str()])[..16].to_owned()
}

pub fn encode_cursor(developer: &UserId, boundary: &str) -> String {
    let fields = [developer_tag(developer), boundary.to_owned()];
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&fields).unwrap_or_default())
}

fn decode_cursor(developer: &UserId, cursor: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::bad_request("cursor is not valid.");
    if cursor.len() > 512 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let [tag, boundary]: [String; 2] = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if tag != developer_tag(developer) || !valid_boundary(&boundary) {
        return Err(invalid());
    }
    Ok(boundary)
}

/// The developer's view of a payment.
/// One page over several scopes, merged newest first; the lines and the next cursor.
pub async fn merged_page(
    app: &App,
    developer: &UserId,
    scopes: &[Scope],
    query: &PaymentQuery,
) -> Result<(Vec<DeveloperPayment>, Option<String>), ApiError> {
    let mut lines: Vec<(String, DeveloperPayment)> = Vec::new();
    let mut more = false;
    for scope in scopes {
        let (found, scope_more) = app
            .store_for(scope)
            .payments_page(query.limit, query.before.as_deref(), query.status)
            .await?;
        more |= scope_more;
        lines.extend(
            found
                .into_iter()
                .map(|(boundary, payment)| (boundary, DeveloperPayment::of(scope, &payment))),
        );
    }
    // Newest first across scopes: boundaries sort by time, then id.
    lines.sort_by(|a, b| b.0.cmp(&a.0));
    more |= lines.len() > query.limit;
    lines.truncate(query.limit);
    let next = if more {
        lines
            .last()
            .map(|(boundary, _)| encode_cursor(developer, boundary))
    } else {
        None
    };
    Ok((lines.into_iter().map(|(_, line)| line).collect(), next))
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
    let mut scopes = Vec::new();
    for project in app.store.projects_of(developer).await? {
        if only_project.as_ref().is_some_and(|id| id != &project.id) {
            continue;
        }
        for mode in Mode::both() {
            if only_mode.is_none_or(|m| m == mode) && project.modes.contains_key(&mode) {
                scopes.push(Scope::new(project.id.clone(), mode));
            }
        }
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_bound_to_their_developer_and_hold_a_valid_boundary() {
        let ann = UserId::parse("ann").unwrap();
        let cursor = encode_cursor(&ann, "001790000000000#pi_abc");
        assert_eq!(
            decode_cursor(&ann, &cursor).unwrap(),
            "001790000000000#pi_abc"
        );
        assert!(decode_cursor(&UserId::parse("bob").unwrap(), &cursor).is_err());
        let forged = encode_cursor(&ann, "#");
        assert!(decode_cursor(&ann, &forged).is_err());
        assert!(decode_cursor(&ann, "!!").is_err());
    }
}
