//! `GET /api/stripe/credit-packages`: active packages, cheapest first.

use lambda_http::{Body, Request, Response};

use crate::api::CreditPackageView;
use crate::http::{ok, respond, ApiError};
use crate::services::accounts;
use crate::{auth, scoping, App};

#[tracing::instrument(name = "credit_packages", skip_all)]
pub async fn credit_packages(app: &App, req: Request) -> Response<Body> {
    respond(run(app, &req).await)
}

async fn run(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    auth::user_id(req)?;
    let scope = scoping::end_user_scope(app, req).await?;
    let packages = accounts::packages_on_sale(app, &scope).await?;
    Ok(ok(packages
        .iter()
        .map(CreditPackageView::of)
        .collect::<Vec<_>>()))
}
