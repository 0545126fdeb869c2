//! KafkaSource (`sources.knative.dev/v1beta1`): the records of topics of any Kafka cluster
//! (independent of the log backend) as CloudEvents: records that are CloudEvents pass through,
//! others are wrapped as Knative wraps them ([`record`]).
//!
//! **At least once from the edge**: a record's offset is committed to its consumer group only
//! after its event is durable in the sink. A crash in between delivers it again.
//!
//! **A bad record never stops a partition**: one that claims to be a CloudEvent but is not a
//! valid one is wrapped like any plain record (as Knative does); one no event can carry is
//! skipped. Both are counted in `switchyard_source_kafka_bad_records_total{reason}` and logged
//! (the first of each reason per run at `warn`, later ones at `debug`), and the offset moves on.

mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchyard_event::kafka::valid_topic_name;
use switchyard_log::records::{InitialOffset, Record, RecordConnector, RecordConsumer, RecordConsumerConfig};
use switchyard_log::LogError;
use switchyard_meta::kafka_net::KafkaNet;
use switchyard_meta::ValidationError;

use crate::resource::{canonical, check_common, typed_spec, CeOverrides, Declared, Sink, SinkSpec};
use crate::runtime::{RunContext, Stopped};
use crate::{Activity, Behaviour, Clients, NotReady, SourceKind};

pub use record::{record_event, RecordEvent, RecordParts, EVENT_TYPE};

/// Records taken from the consumer at once.
const BATCH: usize = 500;
/// Events posted to a URI sink at once in `unordered` mode.
const UNORDERED_IN_FLIGHT: usize = 16;
/// How long to wait before connecting again after the cluster refused.
const RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// The KafkaSource kind.
pub struct Kafka;

/// `spec` of a KafkaSource.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// The cluster: `host:port` entries (each may itself list several, comma-separated).
    #[serde(default)]
    pub bootstrap_servers: Vec<String>,
    /// The topics to read.
    #[serde(default)]
    pub topics: Vec<String>,
    /// The consumer group (default `knative-kafka-source-<uid>`, as Knative names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// Where a group without committed offsets starts: `earliest` or `latest` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_offset: Option<String>,
    /// `ordered` (default): one partition's events reach the sink in order. `unordered`: a URI
    /// sink gets several at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<String>,
    /// Knative's number of consumers: accepted; Switchyard runs one consumer per source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<i32>,
    /// TLS and SASL, in Knative's shape; each value a secret (`value`, `env` or `file`), read
    /// when the source starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<KafkaNet>,
    /// Knative's delivery spec: refused (a source retries its sink until it takes the events,
    /// leaving the records uncommitted meanwhile).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<serde_json::Value>,
    /// Where events go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Extensions set on every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
}

/// `ordering`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ordering {
    Ordered,
    Unordered,
}

fn one_of<T: Copy>(
    field: &str,
    value: Option<&str>,
    default: T,
    choices: [(&str, T); 2],
) -> Result<T, ValidationError> {
    let Some(value) = value else { return Ok(default) };
    choices.iter().find(|(name, _)| *name == value).map(|(_, chosen)| *chosen).ok_or_else(|| {
        ValidationError::field(field, format!("'{value}' is not one of '{}' and '{}'", choices[0].0, choices[1].0))
    })
}

impl KafkaSourceSpec {
    fn initial_offset(&self) -> Result<InitialOffset, ValidationError> {
        let choices = [("earliest", InitialOffset::Earliest), ("latest", InitialOffset::Latest)];
        one_of("spec.initialOffset", self.initial_offset.as_deref(), InitialOffset::Latest, choices)
    }

    fn ordering(&self) -> Result<Ordering, ValidationError> {
        let choices = [("ordered", Ordering::Ordered), ("unordered", Ordering::Unordered)];
        one_of("spec.ordering", self.ordering.as_deref(), Ordering::Ordered, choices)
    }

    fn servers(&self) -> Vec<&str> {
        self.bootstrap_servers.iter().flat_map(|entry| entry.split(',')).map(str::trim).collect()
    }
}

impl SourceKind for Kafka {
    fn kind(&self) -> &'static str {
        "KafkaSource"
    }

    fn plural(&self) -> &'static str {
        "kafkasources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.knative.dev/v1beta1"]
    }

    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        let spec: KafkaSourceSpec = typed_spec(spec)?;
        let servers = spec.servers();
        if servers.is_empty() {
            return Err(ValidationError::field("spec.bootstrapServers", "needs at least one 'host:port'".to_owned()));
        }
        for server in servers {
            let valid =
                server.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(ValidationError::field("spec.bootstrapServers", format!("'{server}' is not 'host:port'")));
            }
        }
        if spec.topics.is_empty() {
            return Err(ValidationError::field("spec.topics", "needs at least one topic".to_owned()));
        }
        for (i, topic) in spec.topics.iter().enumerate() {
            if !valid_topic_name(topic) {
                return Err(ValidationError::field(
                    &format!("spec.topics[{i}]"),
                    format!("'{topic}' is not a Kafka topic name (up to 249 letters, digits, '.', '_' or '-')"),
                ));
            }
        }
        // Group ids may hold more, but these are the characters every tool shows unquoted.
        if let Some(group) = spec.consumer_group.as_deref().filter(|group| !valid_topic_name(group)) {
            return Err(ValidationError::field(
                "spec.consumerGroup",
                format!("'{group}' is not a group id: use letters, digits, '.', '_' or '-'"),
            ));
        }
        spec.initial_offset()?;
        spec.ordering()?;
        if let Some(consumers) = spec.consumers.filter(|n| *n < 1) {
            return Err(ValidationError::field("spec.consumers", format!("'{consumers}' is not a positive number")));
        }
        if let Some(net) = &spec.net {
            net.validate()?;
        }
        if spec.delivery.is_some() {
            return Err(ValidationError::field(
                "spec.delivery",
                "is not supported on sources: a source retries its sink until the events are taken, leaving the records uncommitted meanwhile".to_owned(),
            ));
        }
        check_common(spec.sink.as_ref(), spec.ce_overrides.as_ref())?;
        Ok(canonical(&spec))
    }

    fn compile(&self, source: &Declared, clients: &Clients) -> Result<Behaviour, NotReady> {
        let connector = clients.kafka.clone().ok_or_else(|| NotReady {
            reason: "KafkaUnavailable",
            message: "this switchyard was built without a Kafka client".to_owned(),
        })?;
        let invalid = |message: String| NotReady { reason: "InvalidSpec", message };
        let spec: KafkaSourceSpec = serde_json::from_value(source.spec.clone()).map_err(|e| invalid(e.to_string()))?;
        let initial_offset = spec.initial_offset().map_err(|e| invalid(e.to_string()))?;
        let ordering = spec.ordering().map_err(|e| invalid(e.to_string()))?;
        let config = RecordConsumerConfig {
            bootstrap_servers: spec.servers().join(","),
            group: spec.consumer_group.clone().unwrap_or_else(|| format!("knative-kafka-source-{}", source.uid)),
            topics: spec.topics.clone(),
            initial_offset,
            client_id: format!("switchyard-kafkasource-{}-{}", source.id.namespace, source.id.name),
            connect_timeout: Duration::from_secs(5),
            properties: Vec::new(),
        };
        // Only a URI sink takes events one request at a time; a broker takes a batch at once.
        let concurrent = ordering == Ordering::Unordered && matches!(source.sink, Sink::Uri(_));
        Ok(Behaviour::Active(Arc::new(Consumer { connector, config, net: spec.net, concurrent })))
    }

    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> crate::SpecSchema {
        crate::SpecSchema::of::<KafkaSourceSpec>()
    }
}

/// A running KafkaSource.
struct Consumer {
    connector: Arc<dyn RecordConnector>,
    /// Without `net`'s properties, which are read at every connection.
    config: RecordConsumerConfig,
    net: Option<KafkaNet>,
    concurrent: bool,
}

impl Consumer {
    /// The consumer's settings, with `net`'s secrets read now: a variable or file fixed after a
    /// failure is taken at the next attempt.
    fn config(&self) -> Result<RecordConsumerConfig, NotReady> {
        let mut config = self.config.clone();
        if let Some(net) = &self.net {
            let properties =
                net.properties().map_err(|error| NotReady { reason: "SecretNotFound", message: error.0 })?;
            config.properties.extend(properties);
        }
        Ok(config)
    }

    async fn connect(&self, context: &RunContext) -> Result<Box<dyn RecordConsumer>, Stopped> {
        loop {
            let config = match self.config() {
                Ok(config) => config,
                Err(not_ready) => {
                    tracing::debug!(source = %context.source().id, message = %not_ready.message, "kafka source cannot read its secrets");
                    context.report(Some(not_ready));
                    context.sleep(RECONNECT_DELAY).await?;
                    continue;
                }
            };
            match self.connector.connect(config).await {
                Ok(consumer) => return Ok(consumer),
                Err(error) => {
                    self.report(context, &error);
                    context.sleep(RECONNECT_DELAY).await?;
                }
            }
        }
    }

    fn report(&self, context: &RunContext, error: &LogError) {
        let reason = match error {
            LogError::UnknownTopic(_) => "TopicNotFound",
            _ => "KafkaUnavailable",
        };
        tracing::debug!(source = %context.source().id, %error, "kafka source cannot read");
        context.report(Some(NotReady { reason, message: error.to_string() }));
    }

    /// Reads, sends, commits, until stopped.
    async fn pump(
        &self,
        context: &RunContext,
        consumer: &mut dyn RecordConsumer,
        bad_records: &mut BadRecords,
    ) -> Result<(), Stopped> {
        let id = &context.source().id;
        loop {
            let batch = tokio::select! {
                batch = consumer.next_batch(BATCH) => batch,
                () = context.stopped() => return Err(Stopped),
            };
            let records = match batch {
                Ok(records) => records,
                Err(error) => {
                    self.report(context, &error);
                    continue;
                }
            };
            context.report(None);
            let events: Vec<_> = records.iter().filter_map(|record| bad_records.map(context, record)).collect();
            if events.is_empty() {
                // Every record was skipped: nothing to send, but their offsets are done.
            } else if self.concurrent {
                deliver_concurrently(context, events).await?;
            } else {
                context.deliver(events).await?;
            }
            // Durable in the sink: now, and only now, the records are done. A batch is in
            // order per partition, so each partition's last record is its next offset.
            let next: BTreeMap<(&str, i32), i64> =
                records.iter().map(|record| ((record.topic.as_str(), record.partition), record.offset + 1)).collect();
            for ((topic, partition), offset) in next {
                if let Err(error) = consumer.commit(topic, partition, offset) {
                    tracing::warn!(source = %id, topic, partition, offset, %error, "cannot commit");
                }
            }
        }
    }
}

/// What a run saw of records that are not CloudEvents as they claim, or cannot be events at all.
#[derive(Default)]
struct BadRecords {
    /// The reasons already logged at `warn` in this run.
    logged: BTreeSet<&'static str>,
}

impl BadRecords {
    /// The event `record` stands for, if any; counts and logs a bad one.
    fn map(&mut self, context: &RunContext, record: &Record) -> Option<switchyard_event::Event> {
        let id = &context.source().id;
        let (reason, what, error, event) = match record_event(&id.namespace, &id.name, parts(record)) {
            RecordEvent::CloudEvent(event) | RecordEvent::Wrapped(event) => return Some(event),
            RecordEvent::WrappedInvalid { event, error } => {
                ("invalid_cloudevent", "is not a valid CloudEvent; wrapped as a plain record", error, Some(event))
            }
            RecordEvent::Unmappable(error) => ("unmappable", "cannot be an event; skipped", error, None),
        };
        crate::metrics::kafka_bad_record(reason);
        let (topic, partition, offset) = (record.topic.as_str(), record.partition, record.offset);
        if self.logged.insert(reason) {
            tracing::warn!(source = %id, topic, partition, offset, %error, "kafka record {what} (logged once per reason; counted in switchyard_source_kafka_bad_records_total)");
        } else {
            tracing::debug!(source = %id, topic, partition, offset, %error, "kafka record {what}");
        }
        event
    }
}

fn parts(record: &Record) -> RecordParts<'_> {
    RecordParts {
        topic: &record.topic,
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        key: record.key.as_deref(),
        headers: &record.headers,
        value: record.value.as_ref(),
    }
}

/// Sends a batch a few events at a time; returns once every one is durable.
async fn deliver_concurrently(context: &RunContext, events: Vec<switchyard_event::Event>) -> Result<(), Stopped> {
    let mut events = events.into_iter();
    loop {
        let chunk: Vec<_> = events.by_ref().take(UNORDERED_IN_FLIGHT).collect();
        if chunk.is_empty() {
            return Ok(());
        }
        let sends = chunk.into_iter().map(|event| context.deliver(vec![event]));
        for sent in futures_util::future::join_all(sends).await {
            sent?;
        }
    }
}

#[async_trait]
impl Activity for Consumer {
    async fn run(&self, context: RunContext) {
        let mut bad_records = BadRecords::default();
        while !context.is_stopped() {
            let Ok(mut consumer) = self.connect(&context).await else { return };
            let pumped = self.pump(&context, consumer.as_mut(), &mut bad_records).await;
            if let Err(error) = consumer.close().await {
                tracing::warn!(source = %context.source().id, %error, "closing the kafka consumer");
            }
            if pumped.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        Kafka.validate(&spec)
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "bootstrapServers": ["127.0.0.1:9092"],
            "topics": ["orders"],
            "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
        })
    }

    #[test]
    fn knative_specs_are_accepted() {
        validate(valid()).unwrap();
        let mut spec = valid();
        spec["consumerGroup"] = serde_json::json!("orders-group");
        spec["initialOffset"] = serde_json::json!("earliest");
        spec["ordering"] = serde_json::json!("unordered");
        spec["consumers"] = serde_json::json!(3);
        spec["bootstrapServers"] = serde_json::json!(["a:9092,b:9092", "c:9093"]);
        spec["net"] = serde_json::json!({"sasl": {"enable": false}, "tls": {"enable": false}});
        validate(spec.clone()).unwrap();
        spec["net"] = serde_json::json!({
            "sasl": {"enable": true, "user": {"value": "u"}, "password": {"env": "KAFKA_PASSWORD"}, "type": {"value": "SCRAM-SHA-256"}},
            "tls": {"enable": true, "caCert": {"file": "/etc/kafka/ca.pem"}},
        });
        validate(spec).unwrap();
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases: [(&str, serde_json::Value, &str); 12] = [
            ("bootstrapServers", serde_json::json!([]), "spec.bootstrapServers"),
            ("bootstrapServers", serde_json::json!(["nohost"]), "spec.bootstrapServers"),
            ("topics", serde_json::json!([]), "spec.topics"),
            ("topics", serde_json::json!(["ok", "not a topic"]), "spec.topics[1]"),
            ("consumerGroup", serde_json::json!("a b"), "spec.consumerGroup"),
            ("initialOffset", serde_json::json!("newest"), "spec.initialOffset"),
            ("ordering", serde_json::json!("fifo"), "spec.ordering"),
            ("consumers", serde_json::json!(0), "spec.consumers"),
            (
                "net",
                serde_json::json!({"tls": {"enable": true, "caCert": {"value": "x"}}}),
                "spec.net.tls.caCert.value",
            ),
            ("net", serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"}}}), "spec.net.sasl.password"),
            (
                "net",
                serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"}, "password": {"secretKeyRef": {"name": "s", "key": "p"}}}}),
                "spec.net.sasl.password.secretKeyRef",
            ),
            ("delivery", serde_json::json!({"retry": 3}), "spec.delivery"),
        ];
        for (field, value, expected) in cases {
            let mut spec = valid();
            spec[field] = value.clone();
            let error = validate(spec).expect_err(&value.to_string());
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{value}: {error}") };
            assert_eq!(actual, expected, "{value}: {error}");
        }
    }
}
