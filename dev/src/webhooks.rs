//! What the webhook deliverer's SQS event source mapping does deployed, for the local stack and
//! the tests: reads the deliveries queue (in moto) and hands each batch, as Lambda's SQS event,
//! to the code the `webhook-deliver` function runs; takes off the queue what it did, leaves the
//! rest to come back after the visibility timeout.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::router::LocalApi;

/// Seconds a received message stays hidden (the template's queue says 360 deployed; locally a
/// batch handed back comes again sooner).
const VISIBILITY_SECS: i32 = 30;

/// Batches handled at once: as Lambda runs several instances of the function, a slow batch
/// (an endpoint that hangs) never holds up the next.
const CONCURRENT_BATCHES: usize = 8;

/// Starts reading `queue_url` for `api`'s app, until the process ends.
pub fn start(api: Arc<LocalApi>, sdk: &aws_config::SdkConfig, queue_url: String) {
    let sqs = crate::setup::sqs_client(sdk);
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_BATCHES));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let received = match receive(&sqs, &queue_url).await {
                Ok(received) => received,
                Err(err) => {
                    tracing::warn!(cause = %err, "webhook queue reader: retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            if received.is_empty() {
                continue;
            }
            let (api, sqs, queue_url) = (api.clone(), sqs.clone(), queue_url.clone());
            tokio::spawn(async move {
                if let Err(err) = handle(&api, &sqs, &queue_url, received).await {
                    tracing::warn!(cause = %err, "webhook queue reader: a batch failed");
                }
                drop(slot);
            });
        }
    });
}

async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Vec<aws_sdk_sqs::types::Message>, String> {
    Ok(sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .visibility_timeout(VISIBILITY_SECS)
        .send()
        .await
        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())?
        .messages
        .unwrap_or_default())
}

async fn handle(
    api: &LocalApi,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: Vec<aws_sdk_sqs::types::Message>,
) -> Result<(), String> {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id().unwrap_or_default(),
                "receiptHandle": m.receipt_handle().unwrap_or_default(),
                "body": m.body().unwrap_or_default(),
                "eventSource": "aws:sqs",
            })
        })
        .collect();
    let answer = coffer::calls::as_function(
        "webhook-deliver",
        coffer::jobs::deliver_webhook_batch(&api.app, &json!({ "Records": records })),
    )
    .await;
    let failed: HashSet<&str> = answer["batchItemFailures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["itemIdentifier"].as_str())
        .collect();
    for message in &messages {
        if failed.contains(message.message_id().unwrap_or_default()) {
            continue;
        }
        crate::setup::take_off(sqs, queue_url, message).await?;
    }
    Ok(())
}
