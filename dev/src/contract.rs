//! Every answer checked against the OpenAPI document (`openapi.json`, generated from the code):
//! the route must describe the status, and the body must match that status's schema, envelope
//! included. The local router runs the check on each routed answer when a `Contract` is set;
//! the integration tests fail on any answer the document does not describe.

use std::collections::HashMap;

use serde_json::{json, Value};

/// The committed document (the test stage checks it is what the code generates).
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub struct Contract {
    /// (method, route pattern) → status → the body's validator.
    operations: HashMap<(String, String), HashMap<u16, jsonschema::Validator>>,
}

impl Contract {
    /// The contract of the committed document.
    pub fn load() -> Result<Self, String> {
        let document: Value =
            serde_json::from_str(DOCUMENT).map_err(|e| format!("openapi.json: {e}"))?;
        Self::from_document(&document)
    }

    pub fn from_document(document: &Value) -> Result<Self, String> {
        let components = document.get("components").cloned().unwrap_or(json!({}));
        let paths = document
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("the document has no paths")?;
        let mut operations = HashMap::new();
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, operation) in item {
                let Some(responses) = operation.get("responses").and_then(Value::as_object) else {
                    continue;
                };
                let mut by_status = HashMap::new();
                for (status, response) in responses {
                    let status: u16 = status
                        .parse()
                        .map_err(|_| format!("{method} {path}: status {status} is not a number"))?;
                    let response = resolve(response, document)?;
                    let schema = response
                        .pointer("/content/application~1json/schema")
                        .cloned()
                        .ok_or_else(|| format!("{method} {path} {status}: no JSON schema"))?;
                    // The schema's `#/components/...` references resolve against this root.
                    let mut root = json!({
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "components": components,
                    });
                    if let (Some(root), Some(schema)) = (root.as_object_mut(), schema.as_object()) {
                        for (key, value) in schema {
                            root.insert(key.clone(), value.clone());
                        }
                    }
                    let validator = jsonschema::validator_for(&root)
                        .map_err(|e| format!("{method} {path} {status}: {e}"))?;
                    by_status.insert(status, validator);
                }
                operations.insert((method.to_ascii_uppercase(), path.clone()), by_status);
            }
        }
        Ok(Self { operations })
    }

    /// Whether the document describes this answer of the route `pattern`; why not, if not.
    pub fn check(
        &self,
        method: &str,
        pattern: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), String> {
        let by_status = self
            .operations
            .get(&(method.to_owned(), pattern.to_owned()))
            .ok_or_else(|| format!("{method} {pattern} is not in the document"))?;
        let validator = by_status
            .get(&status)
            .ok_or_else(|| format!("status {status} is not described for {method} {pattern}"))?;
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("the body of {status} is not JSON: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .take(5)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the body of {status} does not match the document: {}",
                errors.join("; ")
            ))
        }
    }
}

/// A response object, following one `$ref` into `#/components/responses`.
fn resolve<'a>(response: &'a Value, document: &'a Value) -> Result<&'a Value, String> {
    match response.get("$ref").and_then(Value::as_str) {
        None => Ok(response),
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer))
            .ok_or_else(|| format!("unresolved reference {reference}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_document_is_what_the_code_generates() {
        let generated = coffer::openapi::document_json().expect("document");
        assert!(
            generated == DOCUMENT,
            "openapi.json is stale: run `target/debug/coffer-dev openapi > openapi.json`"
        );
    }

    #[test]
    fn answers_are_checked_against_their_status_and_schema() {
        let contract = Contract::load().expect("contract");
        let route = "/api/stripe/balance";
        let good = br#"{"success":true,"data":{"balance":15.0,"currency":"usd","held":0.0,"buckets":[{"amount":15.0,"kind":"paid","priority":0}]}}"#;
        assert_eq!(contract.check("GET", route, 200, good), Ok(()));
        let error = br#"{"success":false,"error":"authentication required","code":"unauthorized"}"#;
        assert_eq!(contract.check("GET", route, 401, error), Ok(()));
        // A field missing, an unknown code, an undescribed status, no envelope, not JSON.
        let missing = br#"{"success":true,"data":{"balance":15.0}}"#;
        assert!(contract.check("GET", route, 200, missing).is_err());
        let unknown_code = br#"{"success":false,"error":"x","code":"teapot"}"#;
        assert!(contract.check("GET", route, 401, unknown_code).is_err());
        assert!(contract.check("GET", route, 418, error).is_err());
        assert!(contract
            .check("GET", route, 200, br#"{"balance":15.0,"currency":"usd"}"#)
            .is_err());
        assert!(contract.check("GET", route, 200, b"<html>").is_err());
        assert!(contract.check("GET", "/nowhere", 200, good).is_err());
    }
}
