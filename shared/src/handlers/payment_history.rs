//! `GET /api/stripe/payment-history?limit=&cursor=`: the user's payments, newest first, one
//! Query per page.

use lambda_http::{Body, Request, RequestExt, Response};

use crate::api::HistoryLine;
use crate::http::{ok_page, respond, ApiError};
use crate::services::accounts;
use crate::{auth, scoping, App};

const DEFAULT_LIMIT: i32 = 20;
const MAX_LIMIT: i32 = 100;

#[tracing::instrument(name = "payment_history", skip_all)]
pub async fn payment_history(app: &App, req: Request) -> Response<Body> {
    respond(run(app, &req).await)
}

async fn run(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let user = auth::user_id(req)?;
    let query = req.query_string_parameters_ref();
    for name in ["limit", "cursor"] {
        if query
            .and_then(|q| q.all(name))
            .is_some_and(|values| values.len() > 1)
        {
            return Err(ApiError::bad_request(format!("{name} may be given once.")));
        }
    }
    let limit = match query.and_then(|q| q.first("limit")) {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit must be a whole number from 1 to 100."))?,
    };
    let cursor = query
        .and_then(|q| q.first("cursor"))
        .filter(|c| !c.is_empty());
    let scope = scoping::end_user_scope(app, req).await?;
    let (payments, next) = accounts::history(app, &scope, &user, limit, cursor).await?;
    let data: Vec<_> = payments.iter().map(HistoryLine::of).collect();
    Ok(ok_page(data, next))
}
