//! `GET /api/stripe/balance`: the signed-in user's balance, one DynamoDB read.

use lambda_http::{Body, Request, Response};

use crate::api::BalanceView;
use crate::http::{ok, respond, ApiError};
use crate::services::accounts;
use crate::{auth, scoping, App};

#[tracing::instrument(name = "balance", skip_all)]
pub async fn balance(app: &App, req: Request) -> Response<Body> {
    respond(run(app, &req).await)
}

async fn run(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let user = auth::user_id(req)?;
    let scope = scoping::end_user_scope(app, req).await?;
    let balance = accounts::balance(app, &scope, &user).await?;
    Ok(ok(BalanceView::of(&balance)))
}
