//! Local JWTs: HS256 tokens signed with `LOCAL_JWT_SECRET`, checked the way the API Gateway JWT
//! authorizer checks its RS256 tokens when deployed (signature, algorithm, `exp`, `sub`).

use std::collections::HashMap;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

/// Signs a token for `sub` that expires `ttl_secs` from now.
pub fn issue(
    secret: &str,
    sub: &str,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    sign(secret, sub, ttl_secs, None)
}

/// A token for the app's own backend, accepted locally on `/internal/*` in place of IAM.
pub fn issue_service(
    secret: &str,
    name: &str,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    sign(secret, name, ttl_secs, Some("service"))
}

/// A token for a developer: a user whose `cognito:groups` claim lists `developers`, as the local
/// stack's developer claim expects.
pub fn issue_developer(
    secret: &str,
    sub: &str,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    sign(secret, sub, ttl_secs, Some("developer"))
}

/// A token for a user who belongs to `organisations` (the local stack's organisation claim).
pub fn issue_member(
    secret: &str,
    sub: &str,
    organisations: &[&str],
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "sub": sub, "iat": now, "exp": now + ttl_secs,
        ORGANISATION_CLAIM: organisations,
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// The claim that lists a user's organisations (the deployment's default).
pub const ORGANISATION_CLAIM: &str = "organisations";

/// The claim and value that make a local token a developer's (the local stack's defaults).
pub const DEVELOPER_CLAIM: &str = "cognito:groups";
pub const DEVELOPER_GROUP: &str = "developers";

fn sign(
    secret: &str,
    sub: &str,
    ttl_secs: i64,
    role: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = serde_json::json!({ "sub": sub, "iat": now, "exp": now + ttl_secs });
    match role {
        Some("developer") => claims[DEVELOPER_CLAIM] = serde_json::json!([DEVELOPER_GROUP]),
        Some(role) => claims["role"] = role.into(),
        None => {}
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Verifies a token; the claims as API Gateway hands them to a function (all values as text).
/// `None` for anything not HS256, unsigned, expired, or without `sub`.
pub fn verify(secret: &str, token: &str) -> Option<HashMap<String, String>> {
    if secret.is_empty() {
        return None;
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_aud = false;
    validation.leeway = 0;
    let data = decode::<serde_json::Map<String, Value>>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .ok()?;
    let claims: HashMap<String, String> = data
        .claims
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect();
    claims.get("sub").filter(|s| !s.is_empty())?;
    Some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    #[test]
    fn an_issued_token_verifies_with_its_sub() {
        let token = issue("s3cret", "user-1", 60).unwrap();
        assert_eq!(verify("s3cret", &token).unwrap()["sub"], "user-1");
        assert!(verify("other", &token).is_none());
    }

    #[test]
    fn expired_unsigned_and_sub_less_tokens_are_refused() {
        let expired = issue("s3cret", "user-1", -10).unwrap();
        assert!(verify("s3cret", &expired).is_none());

        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"user-1","exp":99999999999}"#);
        assert!(verify("s3cret", &format!("{header}.{body}.")).is_none());

        let no_sub = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": 99999999999_i64}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(verify("s3cret", &no_sub).is_none());
    }

    #[test]
    fn tokens_with_another_algorithm_are_refused() {
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "u", "exp": 99999999999_i64}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(verify("s3cret", &hs512).is_none());
    }
}
