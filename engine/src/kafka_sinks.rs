//! KafkaSinks at work: events written to their topic in the Kafka binding, acknowledged only
//! once Kafka has them (`acks=all`). Three ways lead here, all through [`KafkaSinks::write`]:
//! the sink's HTTP address (`POST /kafkasinks/{namespace}/{name}`, what a trigger whose
//! `subscriber.ref` or dead-letter sink names a KafkaSink delivers to, as Knative's triggers
//! deliver to a KafkaSink's address), and a source whose `sink.ref` names one (written directly).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchyard_event::kafka::{encode_binary, encode_structured, valid_topic_name};
use switchyard_event::Event;
use switchyard_log::records::{KafkaCluster, OutgoingRecord, RecordProducer};
use switchyard_log::LogError;
use switchyard_meta::kafka_sink::{address, kafka_sink_name, ContentMode, KafkaSink};
use switchyard_meta::resources::{Destination, TriggerSpec};
use switchyard_meta::ValidationError;
use switchyard_sources::{SinkError, SourceRef};

use crate::declaration::{Catalog, Declaration, Kind};

/// What a KafkaSink answers in a build without the Kafka client.
const NO_KAFKA_CLIENT: &str = "this switchyard was built without a Kafka client";
/// How long a source's write to a KafkaSink waits for Kafka before it is retried.
const SOURCE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why events were not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaSinkError {
    /// No such KafkaSink (404).
    #[error("kafkasink '{0}' does not exist")]
    NotFound(String),
    /// Kafka did not take them now (503): worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// Kafka refuses them for good (a record too large for the topic; 400).
    #[error("{0}")]
    Refused(String),
}

/// Writes events to declared KafkaSinks.
pub struct KafkaSinks {
    catalog: Arc<Catalog>,
    producer: Option<Arc<dyn RecordProducer>>,
}

impl KafkaSinks {
    pub(crate) fn new(catalog: Arc<Catalog>, producer: Option<Arc<dyn RecordProducer>>) -> KafkaSinks {
        KafkaSinks { catalog, producer }
    }

    fn producer(&self) -> Result<&Arc<dyn RecordProducer>, KafkaSinkError> {
        self.producer.as_ref().ok_or_else(|| KafkaSinkError::Unavailable(NO_KAFKA_CLIENT.to_owned()))
    }

    /// Writes `events` to KafkaSink `namespace/name`, in order; returns once Kafka acknowledged
    /// every one, or fails within `timeout`.
    pub async fn write(
        &self,
        namespace: &str,
        name: &str,
        events: &[Event],
        timeout: Duration,
    ) -> Result<(), KafkaSinkError> {
        let Some(Declaration::KafkaSink(sink)) = self.catalog.get(&Kind::KafkaSink.key(namespace, name)) else {
            return Err(KafkaSinkError::NotFound(format!("{namespace}/{name}")));
        };
        let producer = self.producer()?;
        // Validated on the way in.
        let mode = sink.spec.content_mode().unwrap_or(ContentMode::Structured);
        let records = events
            .iter()
            .map(|event| {
                let record = match mode {
                    ContentMode::Binary => encode_binary(event),
                    ContentMode::Structured => encode_structured(event),
                };
                OutgoingRecord { key: record.key, headers: record.headers, value: record.value }
            })
            .collect();
        let topic = &sink.spec.topic;
        let cluster = cluster(&sink).map_err(KafkaSinkError::Unavailable)?;
        match producer.produce(&cluster, topic, records, timeout).await {
            Ok(()) => {
                crate::metrics::kafka_sink_records("written", events.len());
                Ok(())
            }
            Err(error) => {
                crate::metrics::kafka_sink_records("failed", events.len());
                Err(match error {
                    LogError::UnknownTopic(_) => KafkaSinkError::Unavailable(format!(
                        "topic '{topic}' of kafkasink '{namespace}/{name}' does not exist"
                    )),
                    LogError::Io(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
                        KafkaSinkError::Refused(error.to_string())
                    }
                    error => KafkaSinkError::Unavailable(error.to_string()),
                })
            }
        }
    }

    /// Makes sure the sink's topic exists (created when the sink gives `numPartitions` and
    /// `replicationFactor`, as Knative does).
    pub(crate) async fn prepare(&self, sink: &KafkaSink) -> Result<(), LogError> {
        let producer = self.producer.as_ref().ok_or_else(|| LogError::Unavailable(NO_KAFKA_CLIENT.to_owned()))?;
        let spec = &sink.spec;
        let cluster = cluster(sink).map_err(LogError::Unavailable)?;
        producer.ensure_topic(&cluster, &spec.topic, spec.num_partitions, spec.replication_factor).await
    }
}

/// The sink's cluster as its producer reaches it, its `net` secrets read now (so that a changed
/// variable or file takes effect at the next write); the error says which one is missing, or
/// why the outbound guard refuses the sink (a sink stored before its rule is held to it too).
fn cluster(sink: &KafkaSink) -> Result<KafkaCluster, String> {
    let servers = sink.spec.bootstrap_servers();
    if let Some(why) = switchyard_dispatcher::outbound::installed().refused_kafka_sink(&servers, &sink.spec.topic) {
        return Err(format!("refused by the outbound guard: {why}"));
    }
    let properties = match &sink.spec.net {
        Some(net) => net.properties().map_err(|error| {
            let (namespace, name) = sink.names();
            format!("kafkasink '{namespace}/{name}': {error}")
        })?,
        None => Vec::new(),
    };
    Ok(KafkaCluster::new(servers, properties))
}

/// The sources' way to a KafkaSink: written directly, no HTTP hop.
#[async_trait]
impl switchyard_sources::KafkaSinkOutlet for KafkaSinks {
    async fn write(&self, source: &SourceRef, sink: &str, events: Vec<Event>) -> Result<(), SinkError> {
        // Each is worth retrying for a source: the sink may be declared, Kafka may come back.
        let written = KafkaSinks::write(self, &source.namespace, sink, &events, SOURCE_WRITE_TIMEOUT).await;
        written.map_err(|error| SinkError::Unavailable(error.to_string()))
    }
}

/// Checks the sink's topic name (the rest of the spec is checked by `switchyard_meta`).
pub(crate) fn check_topic(sink: &KafkaSink) -> Result<(), ValidationError> {
    let topic = &sink.spec.topic;
    match valid_topic_name(topic) {
        true => Ok(()),
        false => Err(ValidationError::field(
            "spec.topic",
            format!("'{topic}' is not a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-')"),
        )),
    }
}

/// The KafkaSinks a trigger's subscriber and dead-letter sink refer to, with their fields.
pub(crate) fn trigger_references<'a>(
    spec: &'a TriggerSpec,
    namespace: &str,
) -> Result<Vec<(&'static str, &'a str)>, ValidationError> {
    let mut found = Vec::new();
    for (field, destination) in destinations(spec) {
        if let Some(reference) = destination.r#ref.as_ref() {
            if let Some(name) = kafka_sink_name(reference, &format!("{field}.ref"), namespace)? {
                found.push((field, name));
            }
        }
    }
    Ok(found)
}

fn destinations(spec: &TriggerSpec) -> impl Iterator<Item = (&'static str, &Destination)> {
    let dead_letter = spec.delivery.as_ref().and_then(|delivery| delivery.dead_letter_sink.as_ref());
    [("spec.subscriber", Some(&spec.subscriber)), ("spec.delivery.deadLetterSink", dead_letter)]
        .into_iter()
        .filter_map(|(field, destination)| Some((field, destination?)))
}

/// The trigger's spec with every KafkaSink reference replaced by the sink's address on the
/// server at `base_url`.
pub(crate) fn resolve_references(
    spec: &TriggerSpec,
    namespace: &str,
    base_url: &str,
) -> Result<TriggerSpec, ValidationError> {
    let mut resolved = spec.clone();
    let dead_letter = resolved.delivery.as_mut().and_then(|delivery| delivery.dead_letter_sink.as_mut());
    for (field, destination) in
        [("spec.subscriber", Some(&mut resolved.subscriber)), ("spec.delivery.deadLetterSink", dead_letter)]
    {
        let Some(destination) = destination else { continue };
        let Some(reference) = destination.r#ref.as_ref() else { continue };
        let Some(name) = kafka_sink_name(reference, &format!("{field}.ref"), namespace)? else { continue };
        if destination.uri.is_some() {
            // Knative would make `uri` a path below the sink's address, where a KafkaSink
            // serves nothing.
            return Err(ValidationError::field(field, "give either 'ref' (a KafkaSink) or 'uri', not both".to_owned()));
        }
        destination.uri = Some(address(base_url, namespace, name));
        destination.r#ref = None;
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use switchyard_meta::resources::parse_trigger;

    use super::*;

    fn spec(body: &str) -> TriggerSpec {
        parse_trigger("ns", "t", body.as_bytes()).unwrap().spec
    }

    #[test]
    fn references_to_kafka_sinks_become_their_address_here() {
        let sink = r#"{"apiVersion":"eventing.knative.dev/v1alpha1","kind":"KafkaSink","name":"out"}"#;
        let dead = r#"{"kind":"KafkaSink","name":"dead"}"#;
        let body = format!(
            r#"{{"spec":{{"broker":"b","subscriber":{{"ref":{sink}}},"delivery":{{"deadLetterSink":{{"ref":{dead}}}}}}}}}"#
        );
        let resolved = resolve_references(&spec(&body), "ns", "http://127.0.0.1:8080").unwrap();
        assert_eq!(resolved.subscriber.uri.as_deref(), Some("http://127.0.0.1:8080/kafkasinks/ns/out"));
        assert_eq!(resolved.subscriber.r#ref, None);
        let dead_letter = resolved.delivery.unwrap().dead_letter_sink.unwrap();
        assert_eq!(dead_letter.uri.as_deref(), Some("http://127.0.0.1:8080/kafkasinks/ns/dead"));
        let declared = spec(&body);
        let references = trigger_references(&declared, "ns").unwrap();
        assert_eq!(references, [("spec.subscriber", "out"), ("spec.delivery.deadLetterSink", "dead")]);
    }

    #[test]
    fn a_reference_with_a_uri_or_to_another_namespace_is_refused() {
        let both = r#"{"spec":{"broker":"b","subscriber":{"ref":{"kind":"KafkaSink","name":"out"},"uri":"/x"}}}"#;
        let error = resolve_references(&spec(both), "ns", "http://127.0.0.1").unwrap_err().to_string();
        assert!(error.contains("spec.subscriber"), "{error}");
        let other = r#"{"spec":{"broker":"b","subscriber":{"ref":{"kind":"KafkaSink","name":"out","namespace":"x"}}}}"#;
        let error = resolve_references(&spec(other), "ns", "http://127.0.0.1").unwrap_err().to_string();
        assert!(error.contains("spec.subscriber.ref.namespace"), "{error}");
        let service = r#"{"spec":{"broker":"b","subscriber":{"ref":{"kind":"Service","name":"s"}}}}"#;
        let kept = resolve_references(&spec(service), "ns", "http://127.0.0.1").unwrap();
        assert!(kept.subscriber.r#ref.is_some(), "other kinds are left to the plan, which refuses them");
    }
}
