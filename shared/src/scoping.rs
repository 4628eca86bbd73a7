//! Which scope a request acts in, resolved once at the edge, and who may act there.
//!
//! - End-user routes: `project_id` (default: the default project) and `test_mode` (default: the
//!   deployment's mode for the default project, test for any other). An unknown project, or one
//!   never configured in that mode, is 404.
//! - Developer routes: the caller must hold the developer claim (403 otherwise) and own the
//!   project (404 otherwise, as if it did not exist). `test_mode` defaults to true.
//! - The project webhook: the project and mode come from its path.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::auth::{self, UserId};
use crate::domain::scope::{Mode, ProjectId, Scope};
use crate::http::ApiError;
use crate::services::projects;
use crate::App;

/// One query parameter, refusing it given twice.
fn query_param<'a>(req: &'a Request, name: &str) -> Result<Option<&'a str>, ApiError> {
    let Some(query) = req.query_string_parameters_ref() else {
        return Ok(None);
    };
    match query.all(name) {
        Some(values) if values.len() > 1 => {
            Err(ApiError::bad_request(format!("{name} may be given once.")))
        }
        Some(values) => Ok(values.first().copied()),
        None => Ok(None),
    }
}

fn parse_project(text: &str) -> Result<ProjectId, ApiError> {
    ProjectId::parse(text).ok_or_else(|| {
        ApiError::bad_request("project_id must be 1 to 64 lowercase letters, digits, '-' or '_'.")
    })
}

/// The `test_mode` parameter, or `default`.
fn requested_mode(req: &Request, default: Mode) -> Result<Mode, ApiError> {
    match query_param(req, "test_mode")? {
        None => Ok(default),
        Some(text) => Mode::from_test_mode(text)
            .ok_or_else(|| ApiError::bad_request("test_mode must be true or false.")),
    }
}

/// The scope a request's `project_id` and `test_mode` name, not yet checked to exist.
fn requested_scope(app: &App, req: &Request) -> Result<Scope, ApiError> {
    let project = match query_param(req, "project_id")? {
        None => ProjectId::default_project(),
        Some(text) => parse_project(text)?,
    };
    let default_mode = if project.is_default() {
        app.config.default_mode
    } else {
        Mode::Test
    };
    Ok(Scope::new(project, requested_mode(req, default_mode)?))
}

/// The scope a request's query names (not checked to exist): `None` when the query is
/// malformed. For the answer's format only; routes resolve their scope below.
pub fn named_scope(app: &App, req: &Request) -> Option<Scope> {
    requested_scope(app, req).ok()
}

/// The scope of an end-user (contract) route.
pub async fn end_user_scope(app: &App, req: &Request) -> Result<Scope, ApiError> {
    let scope = requested_scope(app, req)?;
    if app.is_deployment_scope(&scope) {
        return Ok(scope);
    }
    match projects::registered(app, &scope.project).await? {
        Some(project) if project.modes.contains_key(&scope.mode) => Ok(scope),
        Some(_) => Err(ApiError::NotFound(
            "This project is not configured for this mode.".into(),
        )),
        None => Err(ApiError::NotFound("Unknown project.".into())),
    }
}

/// The scope of an internal (IAM) route and the allowlist entry its caller matches. The
/// deployment's own scope allows the operator's principals (`ALLOWED_CALLER_ARNS`); a
/// project's mode allows only the principals its developer named. Anyone else, and any
/// unknown project or mode, is 403: an IAM caller learns nothing of other projects.
pub async fn internal_scope(app: &App, req: &Request) -> Result<(Scope, String), ApiError> {
    let scope = requested_scope(app, req)?;
    let allowed = if app.is_deployment_scope(&scope) {
        app.config.allowed_callers.clone()
    } else {
        projects::registered(app, &scope.project)
            .await?
            .and_then(|p| {
                p.modes
                    .get(&scope.mode)
                    .map(|m| m.allowed_principals.clone())
            })
            .unwrap_or_default()
    };
    let caller = auth::allowed_iam_caller(req, &allowed)?;
    Ok((scope, caller))
}

/// Refuses new payments in a scope whose project was deactivated in that mode.
pub async fn require_active(app: &App, scope: &Scope) -> Result<(), ApiError> {
    if app.is_deployment_scope(scope) {
        return Ok(());
    }
    match projects::registered(app, &scope.project).await? {
        Some(project) if project.active_in(scope.mode) => Ok(()),
        _ => Err(ApiError::NotFound(
            "This project does not take payments in this mode.".into(),
        )),
    }
}

/// The developer calling a developer route: a verified user holding the developer claim.
pub fn developer(app: &App, req: &Request) -> Result<UserId, ApiError> {
    let user = auth::user_id(req)?;
    let holds = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get(&app.config.developer_claim))
            .is_some_and(|claim| claim_holds(claim, &app.config.developer_claim_value)),
        _ => false,
    };
    if holds {
        Ok(user)
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Whether a claim as API Gateway passes it holds `value`: one of its members, compared whole.
pub fn claim_holds(claim: &str, value: &str) -> bool {
    claim_values(claim).iter().any(|item| item == value)
}

/// Whether the organisation claim holds `org`. Stricter than [`claim_holds`]: an identity
/// provider's organisation names may hold spaces, and API Gateway's `[a b]` rendering of an
/// array cannot tell `["acme corp"]` from `["acme","corp"]`, so a bracketed list with a space
/// in it holds nothing (send the claim as a JSON string to list several organisations).
pub fn org_claim_holds(claim: &str, org: &str) -> bool {
    let text = claim.trim();
    let gateway_list = text.starts_with('[')
        && text.ends_with(']')
        && serde_json::from_str::<Vec<String>>(text).is_err();
    if gateway_list && text.contains(char::is_whitespace) {
        return false;
    }
    claim_holds(claim, org)
}

/// The members of a claim, each a whole value, never a piece of one:
/// - a JSON array of strings (`["acme corp","beta"]`) is that array;
/// - `[a b]`, API Gateway's rendering of an array claim (it joins the members with single
///   spaces, so a member cannot itself hold a space: identity providers' group names do not),
///   is its space-separated members;
/// - anything else is one value, spaces and commas included (`acme corp` is one organisation,
///   never `acme` and `corp`).
pub fn claim_values(claim: &str) -> Vec<String> {
    let text = claim.trim();
    if text.is_empty() {
        return Vec::new();
    }
    if let Ok(members) = serde_json::from_str::<Vec<String>>(text) {
        return members;
    }
    match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) if !inner.contains(['[', ']', '"']) => inner
            .split(' ')
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(_) => Vec::new(),
        None => vec![text.to_owned()],
    }
}

/// The account a request acts for: the caller, or with `identifier` an organisation the
/// verified organisation claim lists (403 otherwise). The identifier never names a user other
/// than the caller.
pub fn account(app: &App, req: &Request, identifier: Option<&str>) -> Result<UserId, ApiError> {
    let user = auth::user_id(req)?;
    let Some(identifier) = identifier.filter(|id| *id != user.as_str()) else {
        return Ok(user);
    };
    let org = identifier
        .strip_prefix(crate::domain::records::ORGANISATION_PREFIX)
        .unwrap_or(identifier);
    let member = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get(&app.config.organisation_claim))
            .is_some_and(|claim| org_claim_holds(claim, org)),
        _ => false,
    };
    match UserId::organisation(org) {
        Some(account) if member => Ok(account),
        Some(_) => Err(ApiError::Forbidden),
        None => Err(ApiError::bad_request(
            "identifier must be your user id or one of your organisations.",
        )),
    }
}

/// The route the request matched, as API Gateway names it (`/…/accounts/{account_id}`): what a
/// handler serving several routes dispatches on, so that an id that looks like a route's last
/// segment (an account named `subscriptions`) is never taken for it. The path itself when the
/// request carries no route key.
pub fn route_template(req: &Request) -> String {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .route_key
            .as_deref()
            .and_then(|key| key.split_once(' '))
            .map(|(_, path)| path.to_owned())
            .unwrap_or_else(|| req.uri().path().to_owned()),
        _ => req.uri().path().to_owned(),
    }
}

/// A query parameter given at most once, owned.
pub fn query_value(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    Ok(query_param(req, name)?.map(str::to_owned))
}

/// The `identifier` query parameter of a read route.
pub fn identifier_param(req: &Request) -> Result<Option<&str>, ApiError> {
    query_param(req, "identifier")
}

/// The project of a developer route's path: 400 when malformed.
pub fn path_project(req: &Request) -> Result<ProjectId, ApiError> {
    let params = req.path_parameters_ref();
    let text = params
        .and_then(|p| p.first("project_id"))
        .ok_or_else(|| ApiError::bad_request("project_id is required."))?;
    parse_project(text)
}

/// The mode of a developer route: `test_mode`, defaulting to test for safety.
pub fn developer_mode(req: &Request) -> Result<Mode, ApiError> {
    requested_mode(req, Mode::Test)
}

/// The scope of the project webhook, from its path: `/webhooks/{project_id}/{mode}`.
pub fn webhook_scope(req: &Request) -> Result<Scope, ApiError> {
    let project = path_project(req)?;
    let mode = req
        .path_parameters_ref()
        .and_then(|p| p.first("mode"))
        .and_then(Mode::parse)
        .ok_or_else(|| ApiError::bad_request("mode must be test or live."))?;
    Ok(Scope::new(project, mode))
}

#[cfg(test)]
mod tests {
    use super::{claim_holds, claim_values, org_claim_holds};

    #[test]
    fn list_claims_hold_their_members_only() {
        assert!(claim_holds("developers", "developers"));
        assert!(claim_holds("[admins developers]", "developers"));
        assert!(claim_holds(r#"["admins","developers"]"#, "developers"));
        assert!(claim_holds(r#"["admins", "developers"]"#, "developers"));
        assert!(!claim_holds("[admins developers-2]", "developers"));
        assert!(!claim_holds("", "developers"));
        assert!(!claim_holds("[]", "developers"));
    }

    #[test]
    fn a_claim_is_never_split_inside_a_value() {
        // One organisation whose name has a space is not two organisations.
        assert!(!claim_holds("acme corp", "acme"));
        assert!(!claim_holds("acme corp", "corp"));
        assert!(claim_holds("acme corp", "acme corp"));
        assert!(!claim_holds("acme,corp", "acme"));
        assert!(!claim_holds(r#"["acme corp"]"#, "acme"));
        assert!(claim_holds(r#"["acme corp"]"#, "acme corp"));
        assert!(!claim_holds(r#"["acme,corp"]"#, "corp"));
        assert!(!claim_holds("[acme,corp]", "acme"));
        // Quotes or brackets that are not a JSON array hold nothing rather than pieces.
        assert!(!claim_holds(r#"["acme" corp]"#, "acme"));
        assert!(!claim_holds("[[acme]]", "acme"));
        assert_eq!(claim_values(" [a  b] "), vec!["a", "b"]);
        // The organisation claim never reads API Gateway's ambiguous [a b] rendering.
        assert!(!org_claim_holds("[acme corp]", "acme"));
        assert!(!org_claim_holds("[acme corp]", "corp"));
        assert!(org_claim_holds("[acme]", "acme"));
        assert!(org_claim_holds(r#"["acme","corp"]"#, "corp"));
        assert!(!org_claim_holds("acme corp", "acme"));
        assert_eq!(claim_values("developers"), vec!["developers"]);
    }
}
