//! Prepares Kafka for the end-to-end tests, which do not link rdkafka and run this instead.
//!
//! ```text
//! kafka_tool BOOTSTRAP create-topic NAME PARTITIONS   # idempotent; waits until every partition has a leader
//! kafka_tool BOOTSTRAP produce TOPIC < records.jsonl  # prints `partition offset` per record
//! kafka_tool BOOTSTRAP delete-topic NAME              # idempotent; waits until it is gone
//! kafka_tool BOOTSTRAP consume TOPIC COUNT            # the first COUNT records, as JSON lines
//! ```
//!
//! `consume` reads the topic from its start (a fresh group of its own) until it has COUNT
//! records or 30 s passed, and prints one JSON object a record: `{"partition", "offset", "key",
//! "headers": [["name", "value"|null], ...], "value"}` (`value_base64` instead of `value` when
//! it is not UTF-8). Fewer than COUNT records in time is a failure (after printing them).
//!
//! `produce` reads one JSON object a line (blank lines are skipped), every field optional:
//! `{"key": "text"|null, "value": "text"|null, "value_base64": "...", "headers": [["name",
//! "value"|null], ...], "partition": 0}`. Records are produced in order with the backend's own
//! producer settings (`acks=all`, idempotence) and each is awaited. Any failure ends the tool
//! with a message on stderr and exit status 1 (2 for a bad command line).
//!
//! `cargo run -p switchyard-log-kafka --example kafka_tool -- 127.0.0.1:19092 create-topic orders 3`

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Deserialize;
use switchyard_log_kafka::KafkaConfig;

const USAGE: &str = "usage: kafka_tool BOOTSTRAP create-topic NAME PARTITIONS
       kafka_tool BOOTSTRAP produce TOPIC   (JSON lines on stdin)
       kafka_tool BOOTSTRAP delete-topic NAME
       kafka_tool BOOTSTRAP consume TOPIC COUNT";
/// The bound on every wait: for the cluster to answer, a topic to be served or gone.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One line of `produce`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_base64: Option<String>,
    #[serde(default)]
    headers: Vec<(String, Option<String>)>,
    #[serde(default)]
    partition: Option<i32>,
}

/// A record ready to be produced.
struct Record {
    key: Option<String>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<String>)>,
    partition: Option<i32>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = match args.as_slice() {
        [bootstrap, "create-topic", name, partitions] => match partitions.parse::<i32>() {
            Ok(partitions) if partitions > 0 => create_topic(bootstrap, name, partitions).await,
            _ => return usage(&format!("partitions '{partitions}' is not a positive integer")),
        },
        [bootstrap, "produce", topic] => produce(bootstrap, topic).await,
        [bootstrap, "delete-topic", name] => delete_topic(bootstrap, name).await,
        [bootstrap, "consume", topic, count] => match count.parse::<usize>() {
            Ok(count) => consume(bootstrap, topic, count).await,
            _ => return usage(&format!("count '{count}' is not a number")),
        },
        _ => return usage("unknown command"),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kafka_tool: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("kafka_tool: {problem}\n{USAGE}");
    ExitCode::from(2)
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("client.id", "kafka_tool");
    config
}

fn admin(bootstrap: &str) -> Result<(AdminClient<DefaultClientContext>, AdminOptions), String> {
    let admin = client_config(bootstrap).create().map_err(|e| format!("cannot create a kafka client: {e}"))?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
    Ok((admin, options))
}

fn metadata_client(bootstrap: &str) -> Result<BaseConsumer, String> {
    client_config(bootstrap).create().map_err(|e| format!("cannot create a kafka client: {e}"))
}

/// What the cluster says of `topic`: `None` when it does not exist, else whether every
/// partition has a leader and answers with its end, and the partition count.
fn topic_state(control: &BaseConsumer, bootstrap: &str, topic: &str) -> Result<Option<(bool, usize)>, String> {
    let metadata = control
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| format!("kafka at '{bootstrap}' does not answer: {e}"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
    if found.partitions().is_empty() {
        return Ok(None);
    }
    let led = found.error().is_none() && found.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0);
    // Leaders are named a moment before they answer.
    let served = led
        && found.partitions().iter().all(|p| control.fetch_watermarks(topic, p.id(), Duration::from_secs(5)).is_ok());
    Ok(Some((served, found.partitions().len())))
}

/// Polls `done` every 100 ms until it says yes or [`TIMEOUT`] passes.
fn wait_for(what: &str, mut done: impl FnMut() -> Result<bool, String>) -> Result<(), String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} after {TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<(), String> {
    let (admin, options) = admin(bootstrap)?;
    let control = metadata_client(bootstrap)?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        // -1: the cluster's `default.replication.factor`.
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| format!("cannot create topic '{name}' at '{bootstrap}': {e}"))?;
        match results.into_iter().find_map(Result::err).map(|(_, code)| code) {
            None => break,
            // Idempotent; but Kafka also says so of a topic still being deleted: then wait
            // and create it again.
            Some(RDKafkaErrorCode::TopicAlreadyExists) => {
                if topic_state(&control, bootstrap, name)?.is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!("topic '{name}' is still being deleted after {TIMEOUT:?}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(code) => return Err(format!("kafka refused to create topic '{name}': {code}")),
        }
    }
    let bootstrap = bootstrap.to_owned();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        wait_for(&format!("topic '{name}' is not served"), || {
            Ok(topic_state(&control, &bootstrap, &name)?.is_some_and(|(served, _)| served))
        })?;
        if let Some((_, existing)) = topic_state(&control, &bootstrap, &name)? {
            if existing != partitions as usize {
                eprintln!("kafka_tool: topic '{name}' exists with {existing} partitions, not {partitions}");
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("waiting for the topic failed: {e}"))?
}

async fn delete_topic(bootstrap: &str, name: &str) -> Result<(), String> {
    let (admin, options) = admin(bootstrap)?;
    let results = admin
        .delete_topics(&[name], &options)
        .await
        .map_err(|e| format!("cannot delete topic '{name}' at '{bootstrap}': {e}"))?;
    match results.into_iter().find_map(Result::err).map(|(_, code)| code) {
        None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {}
        Some(code) => return Err(format!("kafka refused to delete topic '{name}': {code}")),
    }
    let control = metadata_client(bootstrap)?;
    let (bootstrap, name) = (bootstrap.to_owned(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        wait_for(&format!("topic '{name}' is not gone"), || Ok(topic_state(&control, &bootstrap, &name)?.is_none()))
    })
    .await
    .map_err(|e| format!("waiting for the deletion failed: {e}"))?
}

/// Parses line `number` of `produce`'s input.
fn parse(number: usize, text: &str) -> Result<Record, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("line {number}: {e}"))?;
    let value = match (line.value, line.value_base64) {
        (Some(_), Some(_)) => return Err(format!("line {number}: both 'value' and 'value_base64' are given")),
        (Some(value), None) => Some(value.into_bytes()),
        (None, Some(encoded)) => {
            Some(STANDARD.decode(&encoded).map_err(|e| format!("line {number}: 'value_base64' is not base64: {e}"))?)
        }
        (None, None) => None,
    };
    if let Some(partition) = line.partition.filter(|p| *p < 0) {
        return Err(format!("line {number}: partition {partition} is negative"));
    }
    Ok(Record { key: line.key, value, headers: line.headers, partition: line.partition })
}

async fn produce(bootstrap: &str, topic: &str) -> Result<(), String> {
    let mut records = Vec::new();
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
        if !line.trim().is_empty() {
            records.push(parse(index + 1, &line)?);
        }
    }
    // Fail fast on a missing topic: the producer would only give up after its message
    // timeout.
    let control = metadata_client(bootstrap)?;
    let (probe_bootstrap, probe_topic) = (bootstrap.to_owned(), topic.to_owned());
    let state = tokio::task::spawn_blocking(move || topic_state(&control, &probe_bootstrap, &probe_topic))
        .await
        .map_err(|e| format!("looking up the topic failed: {e}"))??;
    if state.is_none() {
        return Err(format!("topic '{topic}' does not exist"));
    }

    let producer: FutureProducer =
        KafkaConfig::new(bootstrap).producer().create().map_err(|e| format!("cannot create a kafka producer: {e}"))?;
    // Every record is enqueued before any is awaited, so they go out together; the idempotent
    // producer keeps their order within each partition.
    let mut deliveries = Vec::with_capacity(records.len());
    for record in &records {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header { key: name.as_str(), value: value.as_deref() });
        }
        let mut future_record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_str());
        }
        if let Some(value) = &record.value {
            future_record = future_record.payload(value.as_slice());
        }
        if let Some(partition) = record.partition {
            future_record = future_record.partition(partition);
        }
        let delivery = loop {
            match producer.send_result(future_record) {
                Ok(delivery) => break delivery,
                // The producer's queue is full: wait for room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    future_record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(format!("record {}: cannot produce to topic '{topic}': {e}", deliveries.len() + 1))
                }
            }
        };
        deliveries.push(delivery);
    }
    for (index, delivery) in deliveries.into_iter().enumerate() {
        match delivery.await {
            Ok(Ok(delivered)) => println!("{} {}", delivered.partition, delivered.offset),
            Ok(Err((e, _))) => return Err(format!("record {}: kafka did not store it: {e}", index + 1)),
            Err(_) => return Err(format!("record {}: the producer went away", index + 1)),
        }
    }
    Ok(())
}

async fn consume(bootstrap: &str, topic: &str, count: usize) -> Result<(), String> {
    let group = format!("kafka-tool-{}", std::process::id());
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create a kafka consumer: {e}"))?;
    consumer.subscribe(&[topic]).map_err(|e| format!("cannot subscribe to '{topic}': {e}"))?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + TIMEOUT;
        let mut printed = 0;
        while printed < count && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
            let message = message.map_err(|e| format!("cannot read '{topic}': {e}"))?;
            let text = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_owned).ok();
            let headers: Vec<serde_json::Value> = message
                .headers()
                .map(|headers| headers.iter().map(|h| serde_json::json!([h.key, h.value.and_then(&text)])).collect())
                .unwrap_or_default();
            let mut line = serde_json::json!({
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key().and_then(&text),
                "headers": headers,
            });
            if let Some(value) = message.payload() {
                match text(value) {
                    Some(value) => line["value"] = value.into(),
                    None => line["value_base64"] = STANDARD.encode(value).into(),
                }
            }
            println!("{line}");
            printed += 1;
        }
        match printed < count {
            true => Err(format!("read {printed} of {count} records of '{topic}' in {TIMEOUT:?}")),
            false => Ok(()),
        }
    })
    .await
    .map_err(|e| format!("consuming failed: {e}"))?
}
