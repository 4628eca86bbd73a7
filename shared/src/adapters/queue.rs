//! Amazon SQS: the queue of webhook deliveries. Each message is one delivery of one event to one
//! endpoint (`domain`-free JSON: the services build and read it); a delivery to be tried later
//! goes back with a delay (SQS delays at most 15 minutes: a longer wait is done in steps).

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

/// SendMessageBatch takes at most this many entries.
pub const ENTRIES_PER_CALL: usize = 10;
/// The longest delay SQS gives one message.
pub const MAX_DELAY_SECS: i64 = 900;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SQS call failed: {0}")]
    Call(String),
    #[error("SQS refused {0} of the messages (first: {1})")]
    Refused(usize, String),
}

/// One message to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub body: String,
    /// Seconds before it may be received (at most `MAX_DELAY_SECS`).
    pub delay_secs: i64,
    /// Whose it is (its `MessageGroupId`): on a standard queue, SQS's fair queuing keeps one
    /// tenant's backlog from delaying the others' messages.
    pub tenant: String,
}

#[derive(Clone)]
pub struct DeliveryQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl DeliveryQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// Sends each message after its delay, ten to a call; an error when any was not accepted
    /// (the caller sends them all again: a delivery sent twice is delivered twice, with the same
    /// `webhook-id`).
    pub async fn send(&self, messages: &[Message]) -> Result<(), QueueError> {
        for chunk in messages.chunks(ENTRIES_PER_CALL) {
            let mut request = self.client.send_message_batch().queue_url(&self.url);
            for (index, message) in chunk.iter().enumerate() {
                let delay = i32::try_from(message.delay_secs.clamp(0, MAX_DELAY_SECS)).unwrap_or(0);
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(&message.body)
                    .delay_seconds(delay)
                    .message_group_id(&message.tenant)
                    .build()
                    .map_err(|e| QueueError::Call(e.to_string()))?;
                request = request.entries(entry);
            }
            let output = request.send().await.map_err(|e| {
                QueueError::Call(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
            })?;
            if let Some(first) = output.failed().first() {
                return Err(QueueError::Refused(
                    output.failed().len(),
                    first.code().to_owned(),
                ));
            }
        }
        Ok(())
    }
}
