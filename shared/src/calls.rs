//! Which AWS calls each function really makes, recorded while the tests run, so that a check
//! (`scripts/check-iam.py`) can hold every function's policy in `template.yaml` to what its code
//! calls. Nothing is kept by hand: a call the tests make that the policy does not allow fails the
//! check, the way it would fail deployed.
//!
//! With the `call-log` feature (dev and tests only) and `COFFER_AWS_CALL_LOG` naming a file, an
//! SDK interceptor appends one JSON line per IAM action of every request:
//! `{"function": "create-payment-intent", "action": "dynamodb:GetItem", "resource": "LedgerTable"}`.
//! The function is the one whose code runs ([`as_function`], set by the local router around each
//! handler and by the tests around each job), or `AWS_LAMBDA_FUNCTION_NAME` in a real binary.
//! Calls made by no function (test set-up) are not recorded. Without the feature or the
//! variable, nothing is installed.

use std::future::Future;

tokio::task_local! {
    static FUNCTION: &'static str;
}

/// Runs `work` as the code of `function` (its binary's name): the AWS calls it makes are that
/// function's.
pub async fn as_function<F: Future>(function: &'static str, work: F) -> F::Output {
    FUNCTION.scope(function, work).await
}

#[cfg(feature = "call-log")]
pub use recorder::Recorder;

/// Records that the running function used the secret `secret_id`, also when it was served from
/// a cache that another function filled (every function shares one `App` in the tests; deployed,
/// each reads it itself, with its own policy).
#[cfg(feature = "call-log")]
pub fn note_secret_use(config: &crate::config::Config, secret_id: &str) {
    if let (Some(recorder), Ok(function)) = (Recorder::from_env(config), FUNCTION.try_with(|f| *f))
    {
        recorder.note_secret(function, secret_id);
    }
}

#[cfg(not(feature = "call-log"))]
#[inline(always)]
pub fn note_secret_use(_config: &crate::config::Config, _secret_id: &str) {}

#[cfg(feature = "call-log")]
mod recorder {
    use std::io::Write;

    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
    use aws_smithy_runtime_api::client::interceptors::Intercept;
    use aws_smithy_runtime_api::client::orchestrator::Metadata;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::config_bag::ConfigBag;
    use serde_json::{json, Value};

    use super::FUNCTION;
    use crate::config::Config;

    /// The interceptor; the names it knows turn raw table, secret and bus names into the
    /// template's logical resources.
    #[derive(Debug, Clone)]
    pub struct Recorder {
        path: String,
        table: String,
        secret_id: Option<String>,
        project_prefix: Option<String>,
        bus: Option<String>,
        queue: Option<String>,
    }

    impl Recorder {
        /// A recorder when `COFFER_AWS_CALL_LOG` names a file.
        pub fn from_env(config: &Config) -> Option<Self> {
            let path = std::env::var("COFFER_AWS_CALL_LOG")
                .ok()
                .filter(|p| !p.is_empty())?;
            Some(Self {
                path,
                table: config.table_name.clone(),
                secret_id: config.secret_id.clone(),
                project_prefix: config.project_secret_prefix.clone(),
                bus: config.event_bus_name.clone(),
                queue: config.webhook_queue_url.clone(),
            })
        }

        fn table(&self, name: &str, index: Option<&str>) -> String {
            let table = if name == self.table {
                "LedgerTable".to_owned()
            } else {
                format!("unknown:table/{name}")
            };
            match index {
                Some(index) => format!("{table}/index/{index}"),
                None => table,
            }
        }

        fn secret(&self, id: &str) -> String {
            if self.secret_id.as_deref() == Some(id) {
                return "DeploymentSecret".into();
            }
            match &self.project_prefix {
                Some(prefix) if id.starts_with(&format!("{prefix}/")) => "ProjectSecret".into(),
                _ => format!("unknown:secret/{id}"),
            }
        }

        fn bus(&self, name: &str) -> String {
            if self.bus.as_deref() == Some(name) {
                "BillingEventBus".into()
            } else {
                format!("unknown:bus/{name}")
            }
        }

        /// The (IAM action, logical resource) pairs of one request.
        pub fn actions(
            &self,
            service: &str,
            operation: &str,
            body: &Value,
        ) -> Vec<(String, String)> {
            let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
            let service = service.to_ascii_lowercase();
            if service.contains("dynamodb") {
                let action = |op: &str| format!("dynamodb:{op}");
                match operation {
                    "TransactWriteItems" | "TransactGetItems" => body
                        .get("TransactItems")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|item| {
                            let (kind, inner) = item.as_object()?.iter().next()?;
                            let op = match kind.as_str() {
                                "Put" => "PutItem",
                                "Update" => "UpdateItem",
                                "Delete" => "DeleteItem",
                                "ConditionCheck" => "ConditionCheckItem",
                                "Get" => "GetItem",
                                other => other,
                            };
                            Some((action(op), self.table(&text(inner, "TableName")?, None)))
                        })
                        .collect(),
                    "BatchGetItem" | "BatchWriteItem" => body
                        .get("RequestItems")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .map(|(table, _)| (action(operation), self.table(table, None)))
                        .collect(),
                    _ => {
                        let table = text(body, "TableName").unwrap_or_default();
                        let index = text(body, "IndexName");
                        vec![(action(operation), self.table(&table, index.as_deref()))]
                    }
                }
            } else if service.contains("secrets") {
                let id = text(body, "SecretId")
                    .or_else(|| text(body, "Name"))
                    .unwrap_or_default();
                vec![(format!("secretsmanager:{operation}"), self.secret(&id))]
            } else if service.contains("eventbridge") {
                let buses: Vec<(String, String)> = body
                    .get("Entries")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|entry| {
                        let bus = text(entry, "EventBusName").unwrap_or_else(|| "default".into());
                        (format!("events:{operation}"), self.bus(&bus))
                    })
                    .collect();
                if buses.is_empty() {
                    vec![(format!("events:{operation}"), "unknown:bus".into())]
                } else {
                    buses
                }
            } else if service.contains("sqs") {
                let url = text(body, "QueueUrl").unwrap_or_default();
                let queue = if self.queue.as_deref() == Some(url.as_str()) {
                    "WebhookDeliveriesQueue".to_owned()
                } else {
                    format!("unknown:queue/{url}")
                };
                // SendMessageBatch is allowed by IAM's sqs:SendMessage.
                let action = match operation {
                    "SendMessageBatch" => "SendMessage",
                    other => other,
                };
                vec![(format!("sqs:{action}"), queue)]
            } else {
                vec![(
                    format!("{service}:{operation}"),
                    format!("unknown:{service}"),
                )]
            }
        }

        /// A secret the function used, read now or earlier.
        pub fn note_secret(&self, function: &str, secret_id: &str) {
            self.append(
                function,
                &[(
                    "secretsmanager:GetSecretValue".to_owned(),
                    self.secret(secret_id),
                )],
            );
        }

        fn append(&self, function: &str, actions: &[(String, String)]) {
            let mut lines = String::new();
            for (action, resource) in actions {
                let line = json!({"function": function, "action": action, "resource": resource});
                lines.push_str(&line.to_string());
                lines.push('\n');
            }
            // One write per request, appended: lines of concurrent writers never interleave.
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .and_then(|mut file| file.write_all(lines.as_bytes()));
            if let Err(err) = written {
                tracing::warn!(error = %err, "the AWS call log could not be written");
            }
        }
    }

    impl Intercept for Recorder {
        fn name(&self) -> &'static str {
            "CofferCallRecorder"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _components: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let function = FUNCTION.try_with(|f| (*f).to_owned()).ok().or_else(|| {
                std::env::var("AWS_LAMBDA_FUNCTION_NAME")
                    .ok()
                    .filter(|f| !f.is_empty())
            });
            let (Some(function), Some(metadata)) = (function, cfg.load::<Metadata>()) else {
                return Ok(());
            };
            let body = context
                .request()
                .body()
                .bytes()
                .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
                .unwrap_or(Value::Null);
            let actions = self.actions(metadata.service(), metadata.name(), &body);
            self.append(&function, &actions);
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn recorder() -> Recorder {
            Recorder {
                path: String::new(),
                table: "coffer-t".into(),
                secret_id: Some("coffer/t/stripe".into()),
                project_prefix: Some("coffer/t/projects".into()),
                bus: Some("coffer-t-billing".into()),
                queue: Some("http://sqs/123/coffer-t-webhooks".into()),
            }
        }

        #[test]
        fn a_batch_of_deliveries_is_iams_send_message_on_the_webhook_queue() {
            let r = recorder();
            assert_eq!(
                r.actions(
                    "SQS",
                    "SendMessageBatch",
                    &json!({"QueueUrl": "http://sqs/123/coffer-t-webhooks"})
                ),
                vec![("sqs:SendMessage".into(), "WebhookDeliveriesQueue".into())]
            );
            assert_eq!(
                r.actions(
                    "SQS",
                    "SendMessage",
                    &json!({"QueueUrl": "http://sqs/other"})
                )[0]
                .1,
                "unknown:queue/http://sqs/other"
            );
        }

        #[test]
        fn transactions_are_one_action_per_item_and_names_become_logical_resources() {
            let r = recorder();
            let body = json!({"TransactItems": [
                {"Put": {"TableName": "coffer-t"}},
                {"Update": {"TableName": "coffer-t"}},
                {"ConditionCheck": {"TableName": "other"}}
            ]});
            assert_eq!(
                r.actions("DynamoDB", "TransactWriteItems", &body),
                vec![
                    ("dynamodb:PutItem".into(), "LedgerTable".into()),
                    ("dynamodb:UpdateItem".into(), "LedgerTable".into()),
                    (
                        "dynamodb:ConditionCheckItem".into(),
                        "unknown:table/other".into()
                    ),
                ]
            );
            let query = json!({"TableName": "coffer-t", "IndexName": "gsi1"});
            assert_eq!(
                r.actions("DynamoDB", "Query", &query),
                vec![("dynamodb:Query".into(), "LedgerTable/index/gsi1".into())]
            );
            let secret = json!({"SecretId": "coffer/t/projects/alpha/test"});
            assert_eq!(
                r.actions("Secrets Manager", "GetSecretValue", &secret),
                vec![(
                    "secretsmanager:GetSecretValue".into(),
                    "ProjectSecret".into()
                )]
            );
            let events = json!({"Entries": [{"EventBusName": "coffer-t-billing"}]});
            assert_eq!(
                r.actions("EventBridge", "PutEvents", &events),
                vec![("events:PutEvents".into(), "BillingEventBus".into())]
            );
        }
    }
}
