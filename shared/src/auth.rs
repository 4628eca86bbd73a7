//! Who is calling. The user id is the `sub` claim that the API Gateway JWT authorizer verified and
//! put in the request context (locally, the local router does the same after checking an HS256
//! token). Nothing in a body, path or query can name the user.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

pub use crate::domain::records::UserId;
use crate::http::ApiError;

/// The `sub` claim from the verified JWT claims in the request context; 401 otherwise.
pub fn user_id(req: &Request) -> Result<UserId, ApiError> {
    let context = req.request_context_ref().ok_or(ApiError::Unauthorized)?;
    let RequestContext::ApiGatewayV2(context) = context else {
        return Err(ApiError::Unauthorized);
    };
    let claims = context
        .authorizer
        .as_ref()
        .and_then(|authorizer| authorizer.jwt.as_ref())
        .map(|jwt| &jwt.claims)
        .ok_or(ApiError::Unauthorized)?;
    claims
        .get("sub")
        .and_then(|sub| UserId::parse(sub))
        .filter(|user| !user.is_organisation())
        .ok_or(ApiError::Unauthorized)
}

/// The allowlist entry (a role ARN, or an exact principal ARN) that the IAM principal API
/// Gateway verified (SigV4) matches, for an IAM-authorized route; 403 otherwise. A request
/// without an IAM authorizer context did not come through such a route, whatever its body says.
/// The entry, not the session, names the caller: every instance of a backend role is the same
/// caller, so its idempotency keys replay whichever instance retries.
pub fn allowed_iam_caller(req: &Request, allowed: &[String]) -> Result<String, ApiError> {
    let arn = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone()),
        _ => None,
    }
    .ok_or(ApiError::Forbidden)?;
    match allowed.iter().find(|entry| principal_matches(&arn, entry)) {
        Some(entry) => Ok(entry.clone()),
        None => {
            tracing::warn!(principal = %arn, "IAM caller is not on the allowlist");
            Err(ApiError::Forbidden)
        }
    }
}

/// Whether the caller `arn` is the allowed `entry`: the same ARN, or a session of the allowed
/// role (`arn:aws:sts::<account>:assumed-role/<name>/<session>` for
/// `arn:aws:iam::<account>:role/[<path>/]<name>`).
pub fn principal_matches(arn: &str, entry: &str) -> bool {
    if arn == entry {
        return true;
    }
    let parts = |text: &str| -> Option<(String, String, String)> {
        let mut it = text.splitn(6, ':');
        let (_, partition, service, _, account, resource) = (
            it.next()?,
            it.next()?,
            it.next()?,
            it.next()?,
            it.next()?,
            it.next()?,
        );
        Some((
            format!("{partition}:{account}"),
            service.to_owned(),
            resource.to_owned(),
        ))
    };
    let (Some((caller_scope, caller_service, caller)), Some((role_scope, role_service, role))) =
        (parts(arn), parts(entry))
    else {
        return false;
    };
    let Some(role_name) = role
        .strip_prefix("role/")
        .and_then(|path| path.rsplit('/').next())
    else {
        return false;
    };
    let mut session = caller.splitn(3, '/');
    caller_scope == role_scope
        && caller_service == "sts"
        && role_service == "iam"
        && session.next() == Some("assumed-role")
        && session.next() == Some(role_name)
        && session.next().is_some_and(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iam_event(user_arn: &str) -> Request {
        let authorizer = format!(
            r#","authorizer":{{"iam":{{"accessKey":"A","accountId":"123456789012","callerId":"c",
            "principalOrgId":null,"userArn":"{user_arn}","userId":"u"}}}}"#
        );
        lambda_http::request::from_str(&event(&authorizer)).unwrap()
    }

    #[test]
    fn every_session_of_an_allowed_role_is_the_same_caller_and_others_are_403() {
        let allowed = vec!["arn:aws:iam::123456789012:role/app-backend".to_owned()];
        let one = iam_event("arn:aws:sts::123456789012:assumed-role/app-backend/i-0aaa");
        let two = iam_event("arn:aws:sts::123456789012:assumed-role/app-backend/i-0bbb");
        assert_eq!(allowed_iam_caller(&one, &allowed).unwrap(), allowed[0]);
        assert_eq!(allowed_iam_caller(&two, &allowed).unwrap(), allowed[0]);
        let other = iam_event("arn:aws:sts::123456789012:assumed-role/reporting/x");
        assert_eq!(
            allowed_iam_caller(&other, &allowed).unwrap_err().status(),
            403
        );
        let jwt = lambda_http::request::from_str(&event(
            r#","authorizer":{"jwt":{"claims":{"sub":"user-1"},"scopes":null}}"#,
        ))
        .unwrap();
        assert_eq!(
            allowed_iam_caller(&jwt, &allowed).unwrap_err().status(),
            403
        );
    }

    #[test]
    fn role_sessions_match_their_role_and_nothing_else() {
        let role = "arn:aws:iam::123456789012:role/app-backend";
        let session = "arn:aws:sts::123456789012:assumed-role/app-backend/i-0abc";
        assert!(principal_matches(session, role));
        assert!(principal_matches(
            session,
            "arn:aws:iam::123456789012:role/service/app-backend"
        ));
        assert!(principal_matches(role, role));
        for other in [
            "arn:aws:sts::999999999999:assumed-role/app-backend/i-0abc",
            "arn:aws:sts::123456789012:assumed-role/app-backend-2/i-0abc",
            "arn:aws:sts::123456789012:assumed-role/app-backend/",
            "arn:aws:iam::123456789012:user/app-backend",
            "arn:aws-cn:sts::123456789012:assumed-role/app-backend/s",
            "garbage",
        ] {
            assert!(!principal_matches(other, role), "{other}");
        }
    }

    fn event(authorizer: &str) -> String {
        format!(
            r#"{{"version":"2.0","routeKey":"GET /api/stripe/balance","rawPath":"/api/stripe/balance",
            "rawQueryString":"","headers":{{}},
            "requestContext":{{"accountId":"1","apiId":"a","domainName":"d","domainPrefix":"d",
            "http":{{"method":"GET","path":"/api/stripe/balance","protocol":"HTTP/1.1","sourceIp":"127.0.0.1","userAgent":"t"}},
            "requestId":"r","routeKey":"GET /api/stripe/balance","stage":"$default","time":"t","timeEpoch":0
            {authorizer}}},"isBase64Encoded":false}}"#
        )
    }

    #[test]
    fn the_user_is_the_verified_sub_claim() {
        let json = event(r#","authorizer":{"jwt":{"claims":{"sub":"user-1"},"scopes":null}}"#);
        let req = lambda_http::request::from_str(&json).unwrap();
        assert_eq!(user_id(&req).unwrap().as_str(), "user-1");
    }

    #[test]
    fn a_request_without_claims_is_unauthorized() {
        let req = lambda_http::request::from_str(&event("")).unwrap();
        assert_eq!(user_id(&req).unwrap_err().status(), 401);
        let json = event(r#","authorizer":{"jwt":{"claims":{"sub":""},"scopes":null}}"#);
        let req = lambda_http::request::from_str(&json).unwrap();
        assert_eq!(user_id(&req).unwrap_err().status(), 401);
    }
}
