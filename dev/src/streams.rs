//! A local stand-in for Lambda's DynamoDB Streams event source mappings: reads DynamoDB Local's
//! stream of the table, shard by shard from the start, and hands each batch, in the shape of a
//! Lambda DynamoDB event, to the same code the `stats` and `billing-events` functions run, as
//! their two mappings do deployed (`template.yaml`):
//!
//! - Each function answers which record it stopped at (`ReportBatchItemFailures`); the batch goes
//!   on from that record, up to a bounded number of retries with backoff.
//! - A record that still fails is parked: a pointer to it (shard and sequence number, in the
//!   shape of Lambda's on-failure record) goes to that function's failure queue, and the records
//!   behind it go on. `replay_parked` (`coffer-dev replay-parked`) hands parked records to the
//!   function again once the fix is in.
//! - Records are read as JSON and parsed tolerantly (an attribute DynamoDB Local writes as `{}`
//!   for an empty map, which the AWS SDK cannot parse, reaches the functions as it is).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};
use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use serde_json::{json, Map, Value};

use crate::filters::Filters;
use crate::router::LocalApi;
use coffer::jobs::StreamBatch;
use coffer::App;

/// How often the stream is read when it had nothing new.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How many times a failing record is handed over again before it is parked (the template's
/// `MaximumRetryAttempts` deployed).
pub const DEFAULT_RETRIES: u32 = 5;

/// The two functions the table's stream feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    Stats,
    BillingEvents,
}

impl Consumer {
    pub const ALL: [Consumer; 2] = [Consumer::Stats, Consumer::BillingEvents];

    pub fn name(self) -> &'static str {
        match self {
            Consumer::Stats => "stats",
            Consumer::BillingEvents => "billing-events",
        }
    }

    pub fn parse(name: &str) -> Option<Consumer> {
        Consumer::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The function's code on one batch, as its Lambda runs it.
    pub async fn run(self, app: &App, event: &Value) -> StreamBatch {
        match self {
            Consumer::Stats => {
                coffer::calls::as_function("stats", coffer::jobs::count_stream_event(app, event))
                    .await
            }
            Consumer::BillingEvents => {
                coffer::calls::as_function(
                    "billing-events",
                    coffer::services::events::publish_stream_event(app, event),
                )
                .await
            }
        }
    }

    /// The local failure queue of this function for `table`.
    pub fn failure_queue_name(self, table: &str) -> String {
        format!("{table}-{}-failures", self.name())
    }
}

/// How the follower hands records over.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    /// Retries of a failing record before it is parked.
    pub retries: u32,
    /// The wait before the first retry; doubled each time, up to 2 s.
    pub first_backoff: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            retries: DEFAULT_RETRIES,
            first_backoff: Duration::from_millis(200),
        }
    }
}

/// A Streams client for DynamoDB Local, which serves streams on its own endpoint.
pub fn local_client(sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodbstreams::Client {
    let mut config = aws_sdk_dynamodbstreams::config::Builder::from(sdk);
    if let Ok(url) = std::env::var("AWS_ENDPOINT_URL_DYNAMODB") {
        config = config.endpoint_url(url);
    }
    aws_sdk_dynamodbstreams::Client::from_conf(config.build())
}

/// Makes sure the table has its stream and each function its failure queue, then follows the
/// stream in the background.
pub async fn start(api: Arc<LocalApi>, sdk: &aws_config::SdkConfig) -> Result<(), String> {
    start_with(api, sdk, Delivery::default()).await
}

/// [`start`], with the retries and backoff given.
pub async fn start_with(
    api: Arc<LocalApi>,
    sdk: &aws_config::SdkConfig,
    delivery: Delivery,
) -> Result<(), String> {
    let tables = api.app.store.client().clone();
    let table = api.app.store.table().to_owned();
    enable_stream(&tables, &table).await?;
    let sqs = crate::setup::sqs_client(sdk);
    let mut queues = HashMap::new();
    for consumer in Consumer::ALL {
        let url = crate::setup::queue(&sqs, &consumer.failure_queue_name(&table)).await?;
        queues.insert(consumer.name(), url);
    }
    let follower = Follower {
        api,
        tables,
        streams: local_client(sdk),
        raw: RawStreams::from_env()?,
        sqs,
        queues,
        table,
        delivery,
        filters: Filters::of_template()?,
    };
    tokio::spawn(follower.follow());
    Ok(())
}

/// Turns the table's stream on (a table made before streams were used has none).
pub async fn enable_stream(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), String> {
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| {
            format!(
                "describe table: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )
        })?;
    let enabled = described
        .table()
        .and_then(|t| t.stream_specification())
        .is_some_and(|s| s.stream_enabled());
    if enabled {
        return Ok(());
    }
    let spec = StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewAndOldImages)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .update_table()
        .table_name(table)
        .stream_specification(spec)
        .send()
        .await
        .map_err(|e| {
            format!(
                "enable stream: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )
        })?;
    Ok(())
}

/// Where the follower is in each shard.
#[derive(Default)]
struct Position {
    /// The open iterator of each shard being read (`None`: the shard is closed and read).
    iterators: HashMap<String, Option<String>>,
    /// The last record handed over in each shard, to go on from after an iterator is lost.
    last_done: HashMap<String, String>,
    finished: HashSet<String>,
}

struct Follower {
    api: Arc<LocalApi>,
    tables: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    raw: RawStreams,
    sqs: aws_sdk_sqs::Client,
    /// Each function's failure queue URL.
    queues: HashMap<&'static str, String>,
    table: String,
    delivery: Delivery,
    /// The template's event filters: what each function's mapping lets through.
    filters: Filters,
}

fn describe<E: std::error::Error + 'static, R: std::fmt::Debug>(
    err: aws_sdk_dynamodbstreams::error::SdkError<E, R>,
) -> String {
    aws_sdk_dynamodbstreams::error::DisplayErrorContext(&err).to_string()
}

impl Follower {
    /// Reads the table's stream for as long as the process runs.
    async fn follow(self) {
        let mut position = Position::default();
        loop {
            let progressed = match self.poll_once(&mut position).await {
                Ok(progressed) => progressed,
                Err(err) => {
                    tracing::warn!(error = %err, "reading the local stream failed; trying again");
                    false
                }
            };
            if !progressed {
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    }

    async fn poll_once(&self, position: &mut Position) -> Result<bool, String> {
        let Position {
            iterators,
            last_done,
            finished,
        } = position;
        let described = self
            .tables
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())?;
        let Some(arn) = described.table().and_then(|t| t.latest_stream_arn()) else {
            return Ok(false);
        };
        let stream = self
            .streams
            .describe_stream()
            .stream_arn(arn)
            .send()
            .await
            .map_err(describe)?;
        for shard in stream
            .stream_description()
            .map(|d| d.shards())
            .unwrap_or_default()
        {
            let Some(id) = shard.shard_id() else { continue };
            if finished.contains(id) || iterators.contains_key(id) {
                continue;
            }
            // From the start, or after the last record handed over when an iterator was lost.
            let request = self
                .streams
                .get_shard_iterator()
                .stream_arn(arn)
                .shard_id(id);
            let request = match last_done.get(id) {
                Some(sequence) => request
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(sequence),
                None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let iterator = request.send().await.map_err(describe)?;
            iterators.insert(id.to_owned(), iterator.shard_iterator().map(str::to_owned));
        }
        let mut progressed = false;
        let shard_ids: Vec<String> = iterators.keys().cloned().collect();
        for id in shard_ids {
            let Some(Some(iterator)) = iterators.get(&id).cloned() else {
                iterators.remove(&id);
                finished.insert(id);
                continue;
            };
            let page = match self.raw.get_records(&iterator, 100).await {
                Ok(page) => page,
                Err(err) => {
                    // An iterator that no longer works (expired, trimmed): take a new one.
                    iterators.remove(&id);
                    return Err(err);
                }
            };
            if let Some(last) = page.records.last() {
                for consumer in Consumer::ALL {
                    // Only what the function's event filter lets through, as Lambda hands it.
                    let records: Vec<Value> = page
                        .records
                        .iter()
                        .filter(|record| self.filters.passes(consumer.name(), record))
                        .cloned()
                        .collect();
                    if records.is_empty() {
                        continue;
                    }
                    // Parking failed (the queue could not be written): the page is read again.
                    if let Err(err) = self.deliver(consumer, arn, &id, &records).await {
                        tracing::warn!(function = consumer.name(), error = %err, "a stream record could not be parked; the batch will be read again");
                        iterators.remove(&id);
                        return Ok(false);
                    }
                }
                progressed = true;
                if let Some(sequence) = sequence_of(last) {
                    last_done.insert(id.clone(), sequence.to_owned());
                }
            }
            iterators.insert(id, page.next_iterator);
        }
        Ok(progressed)
    }

    /// Hands `records` to one function as its event source mapping would: from the record it
    /// stops at, again and again with backoff, then parks that record and goes on.
    async fn deliver(
        &self,
        consumer: Consumer,
        stream_arn: &str,
        shard: &str,
        records: &[Value],
    ) -> Result<(), String> {
        let mut from = 0;
        let mut attempts = 0u32;
        while from < records.len() {
            let event = json!({ "Records": &records[from..] });
            let batch = consumer.run(&self.api.app, &event).await;
            let Some(failed) = batch.failed else {
                return Ok(());
            };
            // A failure the function could not place fails the whole rest of the batch.
            let at = failed
                .sequence
                .as_deref()
                .and_then(|seq| records.iter().position(|r| sequence_of(r) == Some(seq)))
                .unwrap_or(from)
                .max(from);
            if at > from {
                from = at;
                attempts = 0;
            }
            attempts += 1;
            if attempts <= self.delivery.retries {
                let backoff = self
                    .delivery
                    .first_backoff
                    .saturating_mul(1 << (attempts - 1).min(4))
                    .min(Duration::from_secs(2));
                tokio::time::sleep(backoff).await;
                continue;
            }
            self.park(consumer, stream_arn, shard, &records[from], &failed.cause)
                .await?;
            from += 1;
            attempts = 0;
        }
        Ok(())
    }

    /// Sends a pointer to the record to the function's failure queue, in the shape of Lambda's
    /// on-failure record for a stream, and says so in the log (never the record itself).
    async fn park(
        &self,
        consumer: Consumer,
        stream_arn: &str,
        shard: &str,
        record: &Value,
        cause: &str,
    ) -> Result<(), String> {
        let sequence = sequence_of(record).ok_or("a record without a sequence number")?;
        let queue = self.queues.get(consumer.name()).ok_or("no failure queue")?;
        let pointer = parked_pointer(consumer, stream_arn, shard, sequence, self.delivery.retries);
        self.sqs
            .send_message()
            .queue_url(queue)
            .message_body(pointer.to_string())
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())?;
        tracing::error!(
            function = consumer.name(),
            shard,
            sequence,
            cause,
            "a stream record still failed after its retries; parked in the failure queue"
        );
        Ok(())
    }
}

/// The pointer Lambda sends to a stream mapping's failure destination, for one record.
pub fn parked_pointer(
    consumer: Consumer,
    stream_arn: &str,
    shard: &str,
    sequence: &str,
    retries: u32,
) -> Value {
    json!({
        "requestContext": {
            "functionArn": format!("local:{}", consumer.name()),
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": retries + 1,
        },
        "version": "1.0",
        "DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": sequence,
            "endSequenceNumber": sequence,
            "batchSize": 1,
            "streamArn": stream_arn,
        },
    })
}

fn sequence_of(record: &Value) -> Option<&str> {
    record["dynamodb"]["SequenceNumber"].as_str()
}

/// Orders two sequence numbers (decimal strings of any length).
fn sequence_le(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

/// One page of a shard.
struct Page {
    records: Vec<Value>,
    next_iterator: Option<String>,
}

/// `GetRecords` as JSON, without the SDK's typed model: DynamoDB Local writes an empty map in a
/// stream record as `{}`, which the SDK cannot parse (the whole page would fail, for ever). The
/// records go to the functions as Lambda would hand them over, and their parsing is tolerant.
struct RawStreams {
    http: reqwest::Client,
    endpoint: String,
    authorization: String,
}

impl RawStreams {
    /// For DynamoDB Local (`AWS_ENDPOINT_URL_DYNAMODB`), which reads the access key and region
    /// from the `Authorization` header and does not check the signature.
    fn from_env() -> Result<RawStreams, String> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
            .map_err(|_| "the local follower needs AWS_ENDPOINT_URL_DYNAMODB")?;
        let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "local".into());
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
        Ok(RawStreams {
            http: reqwest::Client::new(),
            endpoint,
            authorization: format!(
                "AWS4-HMAC-SHA256 Credential={key}/20250101/{region}/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=0"
            ),
        })
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<Page, String> {
        let response = self
            .http
            .post(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", "DynamoDBStreams_20120810.GetRecords")
            .header("authorization", &self.authorization)
            .json(&json!({ "ShardIterator": iterator, "Limit": limit }))
            .send()
            .await
            .map_err(|e| format!("get records: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("get records: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "get records: {status} {}",
                body["__type"].as_str().unwrap_or("")
            ));
        }
        Ok(Page {
            records: body["Records"].as_array().cloned().unwrap_or_default(),
            next_iterator: body["NextShardIterator"].as_str().map(str::to_owned),
        })
    }
}

/// What a replay did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Replayed {
    /// Parked records handed over again and handled: their pointers were taken off the queue.
    pub replayed: usize,
    /// Parked records that failed again: their pointers stay on the queue.
    pub still_failing: usize,
    /// Pointers to records the stream no longer holds (it keeps them 24 hours): they stay on
    /// the queue for an operator to read.
    pub gone: usize,
}

/// Hands every record parked in `queue_url` to `consumer`'s code again, in the order they were
/// parked, and takes each pointer off the queue once its records were handled. Run once the fix
/// is deployed; safe to run twice (the functions apply each record at most once, and a billing
/// event goes again with its id).
pub async fn replay_parked(
    app: &App,
    sdk: &aws_config::SdkConfig,
    consumer: Consumer,
    queue_url: &str,
) -> Result<Replayed, String> {
    if consumer == Consumer::BillingEvents && app.events.is_none() {
        // Without a bus the function publishes nothing and calls it done: the pointers would
        // be taken off the queue with their events never sent.
        return Err(
            "EVENT_BUS_NAME is not set: billing events cannot be replayed without their bus".into(),
        );
    }
    let filters = Filters::of_template()?;
    let sqs = crate::setup::sqs_client(sdk);
    let streams = local_client(sdk);
    let mut replayed = Replayed::default();
    // Each pointer once per run: one that failed comes back when its visibility ends.
    let mut seen = HashSet::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())?;
        let messages: Vec<_> = received
            .messages()
            .iter()
            .filter(|m| m.message_id().is_none_or(|id| seen.insert(id.to_owned())))
            .collect();
        if messages.is_empty() {
            return Ok(replayed);
        }
        for message in messages {
            let pointer: Value = message
                .body()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            let info = &pointer["DDBStreamBatchInfo"];
            let (Some(arn), Some(shard), Some(start), Some(end)) = (
                info["streamArn"].as_str(),
                info["shardId"].as_str(),
                info["startSequenceNumber"].as_str(),
                info["endSequenceNumber"].as_str(),
            ) else {
                replayed.gone += 1;
                continue;
            };
            let records = match parked_records(&streams, arn, shard, start, end).await {
                Ok(records) => records,
                Err(err) => {
                    tracing::warn!(shard, start, error = %err, "a parked record could not be read again");
                    replayed.gone += 1;
                    continue;
                }
            };
            // What the function's event filter lets through, as its mapping handed it.
            let records: Vec<Value> = records
                .into_iter()
                .filter(|record| filters.passes(consumer.name(), record))
                .collect();
            let batch = consumer.run(app, &json!({ "Records": records })).await;
            if let Some(failed) = batch.failed {
                tracing::warn!(function = consumer.name(), shard, start, cause = %failed.cause, "a parked record failed again; it stays parked");
                replayed.still_failing += 1;
                continue;
            }
            crate::setup::take_off(&sqs, queue_url, message).await?;
            replayed.replayed += 1;
        }
    }
}

/// The records of a shard from `start` to `end` (sequence numbers, both included), read with
/// the SDK (a deployed stream's records parse; locally `RawStreams` reads them).
async fn parked_records(
    streams: &aws_sdk_dynamodbstreams::Client,
    arn: &str,
    shard: &str,
    start: &str,
    end: &str,
) -> Result<Vec<Value>, String> {
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(arn)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(start)
        .send()
        .await
        .map_err(describe)?;
    let mut iterator = iterator.shard_iterator().map(str::to_owned);
    let raw = RawStreams::from_env().ok();
    let mut records = Vec::new();
    // An open shard answers empty pages before its newest record: a few of them end the read.
    let mut empty_pages = 0;
    while let Some(current) = iterator.take() {
        let page = match &raw {
            Some(raw) => raw.get_records(&current, 100).await?,
            None => sdk_page(streams, &current).await?,
        };
        if page.records.is_empty() {
            empty_pages += 1;
            if empty_pages > 5 {
                break;
            }
        }
        for record in page.records {
            match sequence_of(&record) {
                Some(seq) if sequence_le(seq, end) => records.push(record),
                _ => return Ok(records),
            }
        }
        iterator = page.next_iterator;
    }
    if records.is_empty() {
        return Err("the stream no longer holds these records".into());
    }
    Ok(records)
}

/// A page read with the SDK (a deployed stream), in the shape Lambda hands records over.
async fn sdk_page(
    streams: &aws_sdk_dynamodbstreams::Client,
    iterator: &str,
) -> Result<Page, String> {
    let page = streams
        .get_records()
        .shard_iterator(iterator)
        .limit(100)
        .send()
        .await
        .map_err(describe)?;
    Ok(Page {
        records: page.records().iter().map(record_json).collect(),
        next_iterator: page.next_shard_iterator().map(str::to_owned),
    })
}

/// One stream record in the shape Lambda's DynamoDB event gives it.
fn record_json(record: &aws_sdk_dynamodbstreams::types::Record) -> Value {
    let change = record.dynamodb();
    let image = |item: Option<&HashMap<String, AttributeValue>>| {
        item.map(|item| {
            Value::Object(
                item.iter()
                    .map(|(k, v)| (k.clone(), attribute_json(v)))
                    .collect(),
            )
        })
    };
    let mut dynamodb = Map::new();
    if let Some(new) = image(change.and_then(|c| c.new_image())) {
        dynamodb.insert("NewImage".into(), new);
    }
    if let Some(old) = image(change.and_then(|c| c.old_image())) {
        dynamodb.insert("OldImage".into(), old);
    }
    if let Some(at) = change.and_then(|c| c.approximate_creation_date_time()) {
        dynamodb.insert("ApproximateCreationDateTime".into(), json!(at.secs()));
    }
    if let Some(sequence) = change.and_then(|c| c.sequence_number()) {
        dynamodb.insert("SequenceNumber".into(), json!(sequence));
    }
    json!({
        "eventID": record.event_id(),
        "eventName": record.event_name().map(|n| n.as_str()),
        "eventSource": "aws:dynamodb",
        "dynamodb": dynamodb,
    })
}

fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(text) => json!({ "S": text }),
        AttributeValue::N(number) => json!({ "N": number }),
        AttributeValue::Bool(flag) => json!({ "BOOL": flag }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::M(map) => json!({
            "M": map.iter().map(|(k, v)| (k.clone(), attribute_json(v))).collect::<Map<_, _>>()
        }),
        AttributeValue::L(list) => {
            json!({ "L": list.iter().map(attribute_json).collect::<Vec<_>>() })
        }
        AttributeValue::Ss(set) => json!({ "SS": set }),
        AttributeValue::Ns(set) => json!({ "NS": set }),
        _ => json!({ "NULL": true }),
    }
}
