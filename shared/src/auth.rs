//! Who is calling. The user id is the `sub` claim that the API Gateway JWT authorizer verified and
//! put in the request context (locally, the local router does the same after checking an HS256
//! token). Nothing in a body, path or query can name the user.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::http::ApiError;

/// A verified user id (the JWT `sub`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    /// Accepts 1–255 characters with no control characters.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty() && raw.len() <= 255 && !raw.chars().any(char::is_control);
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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
        .ok_or(ApiError::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

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
