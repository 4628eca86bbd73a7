//! The event filters `template.yaml` gives each stream-fed function's event source mapping,
//! applied by the local follower as Lambda applies them: a record that matches none of a
//! function's patterns never reaches it. So a new kind of item whose changes a function must
//! see, but which the template's filter drops, fails a local test instead of vanishing once
//! deployed.
//!
//! The patterns are read from the template at build time (each `Pattern:` under the resource
//! whose `Binary:` names the function). The pattern grammar is Lambda's (EventBridge's): an
//! object matches when every key it names matches; a list of values matches when any does; a
//! value is a string, a number, or one of `{"prefix": …}`, `{"anything-but": …}`,
//! `{"exists": …}`. Any other operator is refused when the filters are read, so a template that
//! needs more fails here rather than passing or dropping records silently.

use std::collections::HashMap;

use serde_json::Value;

/// The template the functions are deployed with.
const TEMPLATE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"));

/// Each function's patterns (a function with none receives every record).
#[derive(Debug, Default)]
pub struct Filters {
    by_function: HashMap<String, Vec<Value>>,
}

impl Filters {
    /// The filters of the template the workspace is built with.
    pub fn of_template() -> Result<Self, String> {
        Self::parse(TEMPLATE)
    }

    /// Reads each resource's `Binary:` and the `Pattern:` lines under it.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut by_function: HashMap<String, Vec<Value>> = HashMap::new();
        let mut binary: Option<String> = None;
        for line in template.lines() {
            let indent = line.len() - line.trim_start().len();
            let text = line.trim();
            // A resource of `Resources:` starts at two spaces of indentation.
            if indent == 2 && text.ends_with(':') && !text.starts_with('#') {
                binary = None;
            }
            if let Some(name) = text.strip_prefix("Binary:") {
                binary = Some(name.trim().to_owned());
            }
            if let Some(raw) = text.strip_prefix("- Pattern:") {
                let raw = raw.trim().trim_matches('\'');
                let pattern: Value = serde_json::from_str(raw)
                    .map_err(|e| format!("a filter pattern in template.yaml is not JSON: {e}"))?;
                check(&pattern)?;
                let function = binary.clone().ok_or_else(|| {
                    "a filter pattern in template.yaml belongs to no function".to_owned()
                })?;
                by_function.entry(function).or_default().push(pattern);
            }
        }
        Ok(Self { by_function })
    }

    /// Whether `function` receives `record` (a stream record as Lambda's event holds it).
    pub fn passes(&self, function: &str, record: &Value) -> bool {
        match self.by_function.get(function) {
            None => true,
            Some(patterns) => patterns.iter().any(|pattern| matches(pattern, record)),
        }
    }

    /// The patterns of `function`.
    pub fn of(&self, function: &str) -> &[Value] {
        self.by_function.get(function).map_or(&[], Vec::as_slice)
    }
}

/// Refuses an operator this matcher does not know.
fn check(pattern: &Value) -> Result<(), String> {
    match pattern {
        Value::Object(fields) => fields.values().try_for_each(check),
        Value::Array(values) => values.iter().try_for_each(|value| match value {
            Value::Object(operator) => {
                for name in operator.keys() {
                    if !matches!(name.as_str(), "prefix" | "anything-but" | "exists") {
                        return Err(format!(
                            "the filter operator {name:?} in template.yaml is not applied locally"
                        ));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }),
        _ => Err("a filter pattern's leaves must be lists of values".into()),
    }
}

/// Whether `event` matches `pattern`.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    match pattern {
        Value::Object(fields) => fields.iter().all(|(key, wanted)| match wanted {
            Value::Array(values) => leaf_matches(values, event.get(key)),
            nested => event.get(key).is_some_and(|inner| matches(nested, inner)),
        }),
        _ => false,
    }
}

fn leaf_matches(values: &[Value], found: Option<&Value>) -> bool {
    values.iter().any(|wanted| match wanted {
        Value::Object(operator) => {
            operator
                .iter()
                .all(|(name, argument)| match (name.as_str(), found) {
                    ("exists", found) => argument.as_bool() == Some(found.is_some()),
                    ("prefix", Some(Value::String(text))) => {
                        argument.as_str().is_some_and(|p| text.starts_with(p))
                    }
                    ("anything-but", Some(value)) => match argument {
                        Value::Array(excluded) => !excluded.contains(value),
                        single => single != value,
                    },
                    _ => false,
                })
        }
        exact => found == Some(exact),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(sk: &str) -> Value {
        json!({"eventID": "1", "eventName": "INSERT",
               "dynamodb": {"Keys": {"pk": {"S": "USER#u"}, "sk": {"S": sk}}}})
    }

    #[test]
    fn the_templates_filters_are_read_for_each_stream_function() {
        let filters = Filters::of_template().expect("the template's filters");
        assert!(!filters.of("stats").is_empty());
        assert!(!filters.of("billing-events").is_empty());
        // The stats function sees payments, subscriptions and entries, nothing else.
        assert!(filters.passes("stats", &record("PAY")));
        assert!(filters.passes("stats", &record("SUB")));
        assert!(filters.passes("stats", &record("ENTRY#001")));
        assert!(!filters.passes("stats", &record("BALANCE")));
        assert!(!filters.passes("stats", &record("TIER")));
        // The billing events function sees the items that mean events.
        for sk in ["SUB", "TIER", "PAY", "INV", "BALANCE", "LIMIT", "DUPSUB"] {
            assert!(filters.passes("billing-events", &record(sk)), "{sk}");
        }
        // A new kind of item the template does not name is dropped, as Lambda would.
        assert!(!filters.passes("billing-events", &record("GRANT#x")));
        // A function without a filter receives everything.
        assert!(filters.passes("balance", &record("ANY")));
    }

    #[test]
    fn patterns_match_as_lambda_matches_them() {
        let pattern = json!({"dynamodb": {"Keys": {"sk": {"S": [
            "PAY", {"prefix": "ENTRY#"}]}}}, "eventName": [{"anything-but": ["REMOVE"]}]});
        let mut removed = record("PAY");
        removed["eventName"] = json!("REMOVE");
        assert!(matches(&pattern, &record("PAY")));
        assert!(matches(&pattern, &record("ENTRY#7")));
        assert!(!matches(&pattern, &removed));
        assert!(!matches(&pattern, &record("PAYX")));
        assert!(!matches(&pattern, &json!({"eventName": "INSERT"})));
        let exists = json!({"dynamodb": {"NewImage": [{"exists": false}]}});
        assert!(matches(&exists, &record("PAY")));
        assert!(check(&json!({"a": [{"numeric": [">", 1]}]})).is_err());
        assert!(
            Filters::parse("  Fn:\n    - Pattern: '{\"a\": [{\"suffix\": \"x\"}]}'\n").is_err()
        );
    }
}
