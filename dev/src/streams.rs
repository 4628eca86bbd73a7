//! A local stand-in for Lambda's DynamoDB Streams event source mapping: reads DynamoDB Local's
//! stream of the table, shard by shard from the start, and hands each batch, in the shape of a
//! Lambda DynamoDB event, to the same code the `stats` and `billing-events` functions run. A
//! batch that fails is handed over again, as Lambda retries it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};
use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use serde_json::{json, Map, Value};

use crate::router::LocalApi;

/// How often the stream is read when it had nothing new.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// A Streams client for DynamoDB Local, which serves streams on its own endpoint.
pub fn local_client(sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodbstreams::Client {
    let mut config = aws_sdk_dynamodbstreams::config::Builder::from(sdk);
    if let Ok(url) = std::env::var("AWS_ENDPOINT_URL_DYNAMODB") {
        config = config.endpoint_url(url);
    }
    aws_sdk_dynamodbstreams::Client::from_conf(config.build())
}

/// Makes sure the table has its stream, then follows it in the background.
pub async fn start(api: Arc<LocalApi>, sdk: &aws_config::SdkConfig) -> Result<(), String> {
    let tables = api.app.store.client().clone();
    let table = api.app.store.table().to_owned();
    enable_stream(&tables, &table).await?;
    tokio::spawn(follow(api, tables, local_client(sdk), table));
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
    /// The last record counted in each shard, to go on from after an iterator is lost.
    last_counted: HashMap<String, String>,
    finished: HashSet<String>,
}

/// Reads the table's stream for as long as the process runs.
pub async fn follow(
    api: Arc<LocalApi>,
    tables: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
) {
    let mut position = Position::default();
    loop {
        let progressed = match poll_once(&api, &tables, &streams, &table, &mut position).await {
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

fn describe<E: std::error::Error + 'static, R: std::fmt::Debug>(
    err: aws_sdk_dynamodbstreams::error::SdkError<E, R>,
) -> String {
    aws_sdk_dynamodbstreams::error::DisplayErrorContext(&err).to_string()
}

async fn poll_once(
    api: &LocalApi,
    tables: &aws_sdk_dynamodb::Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    table: &str,
    position: &mut Position,
) -> Result<bool, String> {
    let Position {
        iterators,
        last_counted,
        finished,
    } = position;
    let described = tables
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())?;
    let Some(arn) = described.table().and_then(|t| t.latest_stream_arn()) else {
        return Ok(false);
    };
    let stream = streams
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
        // From the start, or after the last record counted when an iterator was lost.
        let request = streams.get_shard_iterator().stream_arn(arn).shard_id(id);
        let request = match last_counted.get(id) {
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
        let batch = match streams
            .get_records()
            .shard_iterator(iterator)
            .limit(100)
            .send()
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                // An iterator that no longer works (expired, trimmed): take a new one next time.
                iterators.remove(&id);
                return Err(describe(err));
            }
        };
        let records: Vec<Value> = batch.records().iter().map(record_json).collect();
        if !records.is_empty() {
            let event = json!({ "Records": records });
            // Like Lambda: the batch is retried until it is counted and published (this shard
            // waits). Deployed, the stats and billing-events functions each have their own
            // event source mapping; here one follower feeds both.
            if let Err(err) = coffer::calls::as_function(
                "stats",
                coffer::jobs::count_stream_event(&api.app, &event),
            )
            .await
            {
                tracing::warn!(error = %err, "stream batch failed; it will be read again");
                return Ok(false);
            }
            if let Err(err) = coffer::calls::as_function(
                "billing-events",
                coffer::services::events::publish_stream_event(&api.app, &event),
            )
            .await
            {
                tracing::warn!(code = err.code(), cause = %err.cause(), "publishing a stream batch failed; it will be read again");
                return Ok(false);
            }
            progressed = true;
            if let Some(sequence) = batch
                .records()
                .last()
                .and_then(|r| r.dynamodb())
                .and_then(|d| d.sequence_number())
            {
                last_counted.insert(id.clone(), sequence.to_owned());
            }
        }
        iterators.insert(id, batch.next_shard_iterator().map(str::to_owned));
    }
    Ok(progressed)
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
