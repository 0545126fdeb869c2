//! Knative's KafkaSink (`eventing.knative.dev/v1alpha1`): an addressable that writes every event
//! it is given to a Kafka topic in the Kafka protocol binding. A trigger's `subscriber.ref` (or
//! dead-letter sink, or a source's `sink.ref`) names one by name.

use serde::{Deserialize, Serialize};

use crate::kafka_net::KafkaNet;
use crate::resources::{parse_resource, validate_dns_label, Resource};
use crate::status::{Address, Condition};
use crate::ValidationError;

/// The kind.
pub const KIND: &str = "KafkaSink";
/// Its API version (the only one).
pub const API_VERSION: &str = "eventing.knative.dev/v1alpha1";

/// `spec` of a KafkaSink.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// The topic events are written to.
    #[serde(default)]
    pub topic: String,
    /// The cluster: `host:port` entries (each may itself list several, comma-separated).
    #[serde(default)]
    pub bootstrap_servers: Vec<String>,
    /// `binary` (attributes as `ce_` headers) or `structured` (the JSON format as the value);
    /// Knative's default is `structured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_mode: Option<String>,
    /// With `replicationFactor`: the topic is created with these settings if missing (as
    /// Knative does). Without both, the topic must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_partitions: Option<i32>,
    /// See `numPartitions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i16>,
    /// Knative's SASL/TLS reference to a Kubernetes Secret: refused (use `net`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<serde_json::Value>,
    /// TLS and SASL to the cluster, in KafkaSource's shape (a Switchyard extension). Boxed:
    /// most sinks have none, and every declaration is as large as its largest kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Box<KafkaNet>>,
}

/// How a KafkaSink writes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// Kafka binding §3.2.
    Binary,
    /// Kafka binding §3.3, the JSON format.
    Structured,
}

impl KafkaSinkSpec {
    /// The content mode (`structured` when unset, Knative's default).
    pub fn content_mode(&self) -> Result<ContentMode, ValidationError> {
        match self.content_mode.as_deref() {
            None | Some("structured") => Ok(ContentMode::Structured),
            Some("binary") => Ok(ContentMode::Binary),
            Some(other) => Err(ValidationError::field(
                "spec.contentMode",
                format!("'{other}' is not a content mode: use 'binary' or 'structured'"),
            )),
        }
    }

    /// `bootstrap.servers`: every entry, comma-joined.
    pub fn bootstrap_servers(&self) -> String {
        self.servers().join(",")
    }

    fn servers(&self) -> Vec<&str> {
        self.bootstrap_servers.iter().flat_map(|entry| entry.split(',')).map(str::trim).collect()
    }

    /// Checks every field but the topic name's characters; errors name the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        // The characters Kafka takes are checked where the Kafka binding lives (the engine).
        if self.topic.is_empty() {
            return Err(ValidationError::field("spec.topic", "is required".to_owned()));
        }
        let servers = self.servers();
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
        self.content_mode()?;
        if let Some(partitions) = self.num_partitions.filter(|n| !(1..=10_000).contains(n)) {
            return Err(ValidationError::field(
                "spec.numPartitions",
                format!("'{partitions}' is not between 1 and 10000"),
            ));
        }
        if let Some(factor) = self.replication_factor.filter(|n| !(1..=32).contains(n)) {
            return Err(ValidationError::field(
                "spec.replicationFactor",
                format!("'{factor}' is not between 1 and 32"),
            ));
        }
        if self.auth.is_some() {
            return Err(ValidationError::field(
                "spec.auth",
                "Kubernetes secrets are not read: give TLS and SASL in 'spec.net', as a KafkaSource does (net.sasl.user, net.sasl.password, net.tls.caCert…, each as 'env', 'file' or 'value')".to_owned(),
            ));
        }
        self.net.as_deref().map_or(Ok(()), KafkaNet::validate)
    }
}

/// A KafkaSink as stored and answered.
pub type KafkaSink = Resource<KafkaSinkSpec>;

/// A KafkaSink's observed state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSinkStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// Where to send events over HTTP: `{base}/kafkasinks/{namespace}/{name}`.
    pub address: Address,
    /// `Ready`, or `Ready=False` with a reason (`TopicNotPresent`, `KafkaUnavailable`).
    pub conditions: Vec<Condition>,
}

/// The HTTP address of KafkaSink `namespace/name` on the server at `base_url`.
pub fn address(base_url: &str, namespace: &str, name: &str) -> String {
    format!("{base_url}/kafkasinks/{namespace}/{name}")
}

/// Parses and validates a submitted KafkaSink for `namespace/name`.
pub fn parse_kafka_sink(namespace: &str, name: &str, body: &[u8]) -> Result<KafkaSink, ValidationError> {
    let sink: KafkaSink = parse_resource(KIND, &[API_VERSION], namespace, name, body)?;
    sink.spec.validate()?;
    Ok(sink)
}

/// A Knative KReference to a KafkaSink (in a `Destination.ref`): its name, when `reference` is
/// one. `field` names the reference for errors; `namespace` is the referrer's (a sink of
/// another namespace is refused).
pub fn kafka_sink_name<'a>(
    reference: &'a serde_json::Value,
    field: &str,
    namespace: &str,
) -> Result<Option<&'a str>, ValidationError> {
    let text = |key: &str| reference.get(key).and_then(serde_json::Value::as_str);
    if text("kind") != Some(KIND) {
        return Ok(None);
    }
    if let Some(api_version) = text("apiVersion").filter(|v| *v != API_VERSION) {
        return Err(ValidationError::field(
            &format!("{field}.apiVersion"),
            format!("'{api_version}' is not supported for a KafkaSink: use '{API_VERSION}'"),
        ));
    }
    if let Some(other) = text("namespace").filter(|other| *other != namespace) {
        return Err(ValidationError::field(
            &format!("{field}.namespace"),
            format!("'{other}' is not the namespace '{namespace}': a KafkaSink is referred to from its own namespace"),
        ));
    }
    let name = text("name").unwrap_or_default();
    validate_dns_label(&format!("{field}.name"), name)?;
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knative_kafka_sinks_are_accepted_and_bad_fields_named() {
        let body = br#"{"apiVersion":"eventing.knative.dev/v1alpha1","kind":"KafkaSink",
            "metadata":{"name":"s","namespace":"ns"},
            "spec":{"topic":"orders","bootstrapServers":["127.0.0.1:9092"],"contentMode":"binary"}}"#;
        let sink = parse_kafka_sink("ns", "s", body).unwrap();
        assert_eq!(sink.spec.content_mode().unwrap(), ContentMode::Binary);
        let body = br#"{"apiVersion":"eventing.knative.dev/v1alpha1","kind":"KafkaSink",
            "metadata":{"name":"s","namespace":"ns"},
            "spec":{"topic":"orders","bootstrapServers":["127.0.0.1:9092"],
                "net":{"sasl":{"enable":true,"user":{"value":"u"},"password":{"env":"KAFKA_PASSWORD"}}}}}"#;
        let net = parse_kafka_sink("ns", "s", body).unwrap().spec.net.unwrap();
        assert_eq!(net.sasl.unwrap().password.unwrap().env.as_deref(), Some("KAFKA_PASSWORD"));
        let auth = br#"{"spec":{"topic":"t","bootstrapServers":["a:1"],"auth":{"secret":{"ref":{"name":"s"}}}}}"#;
        let error = parse_kafka_sink("ns", "s", auth).unwrap_err().to_string();
        assert!(error.contains("spec.net"), "{error}");
        let cases = [
            (r#"{"spec":{"bootstrapServers":["a:1"]}}"#, "spec.topic"),
            (r#"{"spec":{"topic":"t","bootstrapServers":["a:1"],"replicationFactor":0}}"#, "spec.replicationFactor"),
            (r#"{"spec":{"topic":"t"}}"#, "spec.bootstrapServers"),
            (r#"{"spec":{"topic":"t","bootstrapServers":["nohost"]}}"#, "spec.bootstrapServers"),
            (r#"{"spec":{"topic":"t","bootstrapServers":["a:1"],"contentMode":"avro"}}"#, "spec.contentMode"),
            (r#"{"spec":{"topic":"t","bootstrapServers":["a:1"],"numPartitions":0}}"#, "spec.numPartitions"),
            (r#"{"spec":{"topic":"t","bootstrapServers":["a:1"],"auth":{"secret":{}}}}"#, "spec.auth"),
            (
                r#"{"spec":{"topic":"t","bootstrapServers":["a:1"],"net":{"sasl":{"enable":true,"user":{"value":"u"}}}}}"#,
                "spec.net.sasl.password",
            ),
        ];
        for (body, field) in cases {
            let error = parse_kafka_sink("ns", "s", body.as_bytes()).unwrap_err();
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{body}: {error}") };
            assert_eq!(actual, field, "{body}");
        }
    }

    #[test]
    fn references_name_a_kafka_sink_of_the_same_namespace() {
        let reference = serde_json::json!({"apiVersion": API_VERSION, "kind": "KafkaSink", "name": "out"});
        assert_eq!(kafka_sink_name(&reference, "spec.subscriber.ref", "ns").unwrap(), Some("out"));
        let service = serde_json::json!({"kind": "Service", "name": "s"});
        assert_eq!(kafka_sink_name(&service, "spec.subscriber.ref", "ns").unwrap(), None);
        let elsewhere = serde_json::json!({"kind": "KafkaSink", "name": "out", "namespace": "other"});
        assert!(kafka_sink_name(&elsewhere, "spec.subscriber.ref", "ns").is_err());
        let unnamed = serde_json::json!({"kind": "KafkaSink"});
        assert!(kafka_sink_name(&unnamed, "spec.subscriber.ref", "ns").is_err());
    }
}
