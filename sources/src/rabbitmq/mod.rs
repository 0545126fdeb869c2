//! RabbitmqSource (`sources.knative.dev/v1alpha1`): the messages of a RabbitMQ queue (AMQP
//! 0-9-1) as CloudEvents: messages that are CloudEvents pass through, others are wrapped as
//! Knative wraps them ([`mapping`]).
//!
//! **At least once from the edge**: a message is acknowledged only after its event is durable
//! in the sink. A crash in between leaves it unacknowledged, and RabbitMQ delivers it again.
//!
//! **Bounded**: the channel's prefetch (`parallelism`) is the most messages held
//! unacknowledged; the source takes what has arrived, up to that bound, sends it as one batch,
//! then acknowledges it with one `basic.ack` (`multiple`).
//!
//! **The queue**: an existing one (`predeclared: true`), or declared durable (quorum or classic)
//! and bound to `exchangeName` with `routingKey`. The exchange is never declared: its type is
//! the publisher's business. While RabbitMQ is away, or the queue or exchange missing, the
//! source is `Ready=False` with why and tries again with backoff.
//!
//! **The connection** is a Switchyard field (Knative's `rabbitmqClusterReference` needs
//! Kubernetes): `connection.uri`, or `connection.uriFromEnv`, the name of an environment variable
//! of the server holding the URI, so that the password is neither stored nor shown.

mod mapping;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};
use serde::{Deserialize, Serialize};
use switchyard_log::backoff::ExponentialBackoff;
use switchyard_meta::ValidationError;

use crate::message::{self, BadMessages, RECONNECT_FIRST, RECONNECT_MAX};
use crate::resource::{
    canonical, check_common, is_env_name, secret_from_env, typed_spec, CeOverrides, Declared, SinkSpec,
};
use crate::runtime::{RunContext, Stopped};
use crate::{Activity, Behaviour, Clients, NotReady, SourceKind};

pub use mapping::{header_value, message_event, MessageParts, EVENT_TYPE, HEADER_EXTENSION_PREFIX};

/// The reason while RabbitMQ cannot be reached (or closed the connection).
const UNAVAILABLE: &str = "RabbitmqUnavailable";

/// The RabbitmqSource kind.
pub struct Rabbitmq;

/// `spec` of a RabbitmqSource.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RabbitmqSourceSpec {
    /// Switchyard's: where RabbitMQ is (Knative's `rabbitmqClusterReference` needs Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<RabbitmqConnection>,
    /// The queue, and how it is set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq_resources_config: Option<RabbitmqResourcesConfig>,
    /// Knative's reference to a `RabbitmqCluster`: refused (it needs Kubernetes; give
    /// `connection`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq_cluster_reference: Option<serde_json::Value>,
    /// Knative's delivery spec: refused (a source retries its sink until it takes the events,
    /// leaving the messages unacknowledged meanwhile).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<serde_json::Value>,
    /// Knative's service account of the adapter: refused (there is no adapter pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Where events go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Extensions set on every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
}

/// `spec.connection`: exactly one of `uri` and `uriFromEnv`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RabbitmqConnection {
    /// `amqp://user:password@host:port/vhost` (stored with the declaration and shown by GET:
    /// prefer `uriFromEnv` when it holds a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The name of an environment variable of the server holding the URI, read when the source
    /// starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_from_env: Option<String>,
}

/// `spec.rabbitmqResourcesConfig`, Knative's.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RabbitmqResourcesConfig {
    /// The virtual host (default: the URI's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// The queue to consume (required).
    #[serde(default)]
    pub queue_name: String,
    /// `quorum` (default, as Knative) or `classic`: the type of a queue the source declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<String>,
    /// The exchange the queue is bound to; required unless `predeclared`. Never declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_name: Option<String>,
    /// Switchyard's: the binding's routing key (default `#`, every message of a topic exchange;
    /// ignored by fanout and headers exchanges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// The channel's prefetch: the most messages held unacknowledged (1 to 10000, default 100;
    /// Knative's default is 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i64>,
    /// The queue exists already: consume it, declare and bind nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predeclared: Option<bool>,
}

/// Queue, exchange and routing-key names: AMQP short strings (up to 255 bytes), printable.
fn check_name(field: &str, value: &str, what: &str) -> Result<(), ValidationError> {
    if value.len() > 255 || value.chars().any(char::is_control) {
        return Err(ValidationError::field(
            field,
            format!("'{}' is not {what}: up to 255 bytes, no control characters", value.escape_debug()),
        ));
    }
    Ok(())
}

/// A URI the client can use: `amqp://` (this build's client has no TLS).
fn parse_uri(field: &str, uri: &str) -> Result<AMQPUri, String> {
    let parsed: AMQPUri = uri.parse().map_err(|error| format!("'{}' is not an AMQP URI: {error}", redact(uri)))?;
    if !uri.starts_with("amqp://") {
        return Err(format!(
            "{field} '{}' is not supported: give an 'amqp://' URI (this build has no TLS)",
            redact(uri)
        ));
    }
    Ok(parsed)
}

/// The URI without its password, for messages.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match uri[scheme + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &uri[..scheme + 3 + colon], &uri[at..]),
            None => uri.to_owned(),
        },
        _ => uri.to_owned(),
    }
}

impl SourceKind for Rabbitmq {
    fn kind(&self) -> &'static str {
        "RabbitmqSource"
    }

    fn plural(&self) -> &'static str {
        "rabbitmqsources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.knative.dev/v1alpha1"]
    }

    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        let spec: RabbitmqSourceSpec = typed_spec(spec)?;
        if spec.rabbitmq_cluster_reference.is_some() {
            return Err(ValidationError::field(
                "spec.rabbitmqClusterReference",
                "is not supported: a RabbitmqCluster needs Kubernetes; give 'connection.uri' or 'connection.uriFromEnv'"
                    .to_owned(),
            ));
        }
        if spec.delivery.is_some() {
            return Err(ValidationError::field(
                "spec.delivery",
                "is not supported on sources: a source retries its sink until the events are taken, leaving the messages unacknowledged meanwhile".to_owned(),
            ));
        }
        if let Some(account) = spec.service_account_name.as_deref().filter(|a| !a.is_empty()) {
            return Err(ValidationError::field(
                "spec.serviceAccountName",
                format!("'{account}' is not supported: the source runs inside switchyard, not in a pod"),
            ));
        }
        match spec.connection.as_ref().map(|c| (c.uri.as_deref(), c.uri_from_env.as_deref())) {
            Some((Some(uri), None)) => {
                parse_uri("spec.connection.uri", uri).map_err(|e| ValidationError::field("spec.connection.uri", e))?;
            }
            Some((None, Some(env))) if is_env_name(env) => {}
            Some((None, Some(env))) => {
                return Err(ValidationError::field(
                    "spec.connection.uriFromEnv",
                    format!("'{env}' is not an environment variable name"),
                ))
            }
            Some((Some(_), Some(_))) => {
                return Err(ValidationError::field(
                    "spec.connection",
                    "give either 'uri' or 'uriFromEnv', not both".to_owned(),
                ))
            }
            Some((None, None)) | None => {
                return Err(ValidationError::field(
                    "spec.connection",
                    "is required: the AMQP URI as 'uri', or the environment variable holding it as 'uriFromEnv'"
                        .to_owned(),
                ))
            }
        }
        let Some(config) = &spec.rabbitmq_resources_config else {
            return Err(ValidationError::field(
                "spec.rabbitmqResourcesConfig",
                "is required: at least 'queueName'".to_owned(),
            ));
        };
        if config.queue_name.is_empty() {
            return Err(ValidationError::field("spec.rabbitmqResourcesConfig.queueName", "is required".to_owned()));
        }
        check_name("spec.rabbitmqResourcesConfig.queueName", &config.queue_name, "a queue name")?;
        if let Some(vhost) = &config.vhost {
            check_name("spec.rabbitmqResourcesConfig.vhost", vhost, "a virtual host")?;
        }
        if let Some(queue_type) = config.queue_type.as_deref().filter(|t| !matches!(*t, "quorum" | "classic")) {
            return Err(ValidationError::field(
                "spec.rabbitmqResourcesConfig.queueType",
                format!("'{queue_type}' is not one of 'quorum' and 'classic'"),
            ));
        }
        if let Some(exchange) = &config.exchange_name {
            check_name("spec.rabbitmqResourcesConfig.exchangeName", exchange, "an exchange name")?;
        }
        if let Some(routing_key) = &config.routing_key {
            check_name("spec.rabbitmqResourcesConfig.routingKey", routing_key, "a routing key")?;
        }
        if config.predeclared != Some(true) && config.exchange_name.as_deref().is_none_or(str::is_empty) {
            return Err(ValidationError::field(
                "spec.rabbitmqResourcesConfig.exchangeName",
                "is required unless 'predeclared' is true: the exchange the source binds its queue to".to_owned(),
            ));
        }
        message::max_in_flight("spec.rabbitmqResourcesConfig.parallelism", config.parallelism)?;
        check_common(spec.sink.as_ref(), spec.ce_overrides.as_ref())?;
        Ok(canonical(&spec))
    }

    fn compile(&self, source: &Declared, _clients: &Clients) -> Result<Behaviour, NotReady> {
        let invalid = |message: String| NotReady { reason: "InvalidSpec", message };
        let spec: RabbitmqSourceSpec =
            serde_json::from_value(source.spec.clone()).map_err(|e| invalid(e.to_string()))?;
        let connection = spec.connection.unwrap_or_default();
        let (field, uri) = match (connection.uri, connection.uri_from_env) {
            (Some(uri), _) => ("spec.connection.uri", uri),
            (None, Some(env)) => {
                let uri = secret_from_env(&env, "the AMQP URI")?;
                ("the AMQP URI in the environment variable", uri)
            }
            (None, None) => return Err(invalid("no connection is given".to_owned())),
        };
        let mut uri = parse_uri(field, &uri).map_err(invalid)?;
        let config = spec.rabbitmq_resources_config.unwrap_or_default();
        if let Some(vhost) = config.vhost.filter(|v| !v.is_empty()) {
            uri.vhost = vhost;
        }
        let prefetch = message::max_in_flight("spec.rabbitmqResourcesConfig.parallelism", config.parallelism)
            .map_err(|e| invalid(e.to_string()))?;
        let setup = if config.predeclared == Some(true) {
            Setup::Predeclared
        } else {
            Setup::Declare {
                exchange: config.exchange_name.unwrap_or_default(),
                routing_key: config.routing_key.unwrap_or_else(|| "#".to_owned()),
                queue_type: config.queue_type.unwrap_or_else(|| "quorum".to_owned()),
            }
        };
        Ok(Behaviour::Active(Arc::new(Consumer {
            uri,
            queue: config.queue_name,
            setup,
            // Validated to fit: at most 10000.
            prefetch: u16::try_from(prefetch).unwrap_or(u16::MAX),
        })))
    }

    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> crate::SpecSchema {
        crate::SpecSchema::of::<RabbitmqSourceSpec>()
    }
}

/// How the queue comes to exist.
enum Setup {
    Predeclared,
    Declare { exchange: String, routing_key: String, queue_type: String },
}

/// A running RabbitmqSource.
struct Consumer {
    uri: AMQPUri,
    queue: String,
    setup: Setup,
    prefetch: u16,
}

/// Why the source cannot consume: a condition's reason and the client's error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct OpenError {
    reason: &'static str,
    message: String,
}

/// An AMQP `NOT_FOUND` (404) from the server.
fn not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

impl Consumer {
    /// Connects, sets the prefetch, makes sure of the queue and starts consuming.
    async fn open(&self) -> Result<(Connection, Channel, lapin::Consumer), OpenError> {
        let unavailable = |error: lapin::Error| OpenError { reason: UNAVAILABLE, message: error.to_string() };
        let connection =
            Connection::connect_uri(self.uri.clone(), ConnectionProperties::default()).await.map_err(unavailable)?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel.basic_qos(self.prefetch, BasicQosOptions::default()).await.map_err(unavailable)?;
        let queue = self.queue.as_str();
        match &self.setup {
            Setup::Predeclared => {
                let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
                channel.queue_declare(queue.into(), options, FieldTable::default()).await.map_err(|error| {
                    if not_found(&error) {
                        OpenError {
                            reason: "QueueNotFound",
                            message: format!("queue '{queue}' does not exist: {error}"),
                        }
                    } else {
                        unavailable(error)
                    }
                })?;
            }
            Setup::Declare { exchange, routing_key, queue_type } => {
                let mut arguments = FieldTable::default();
                arguments.insert("x-queue-type".into(), AMQPValue::LongString(queue_type.as_bytes().to_vec().into()));
                let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
                channel.queue_declare(queue.into(), options, arguments).await.map_err(|error| OpenError {
                    reason: "QueueNotDeclared",
                    message: format!("cannot declare queue '{queue}': {error}"),
                })?;
                channel
                    .queue_bind(
                        queue.into(),
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|error| {
                        if not_found(&error) {
                            OpenError {
                                reason: "ExchangeNotFound",
                                message: format!("exchange '{exchange}' does not exist: {error}"),
                            }
                        } else {
                            unavailable(error)
                        }
                    })?;
            }
        }
        let consumer = channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(unavailable)?;
        Ok((connection, channel, consumer))
    }

    /// [`Consumer::open`] until it succeeds, with backoff, saying why meanwhile.
    async fn connect(&self, context: &RunContext) -> Result<(Connection, Channel, lapin::Consumer), Stopped> {
        let mut wait = ExponentialBackoff::new(RECONNECT_FIRST, RECONNECT_MAX);
        loop {
            let attempt = tokio::select! {
                attempt = self.open() => attempt,
                () = context.stopped() => return Err(Stopped),
            };
            match attempt {
                Ok(opened) => return Ok(opened),
                Err(error) => {
                    message::lost(context, error.reason, &error);
                    context.sleep(wait.next_delay()).await?;
                }
            }
        }
    }

    /// Takes, sends, acknowledges, until stopped (`Err`) or the connection is lost (`Ok`, with
    /// why).
    async fn pump(
        &self,
        context: &RunContext,
        channel: &Channel,
        consumer: &mut lapin::Consumer,
        bad: &mut BadMessages,
    ) -> Result<String, Stopped> {
        let id = &context.source().id;
        let limit = usize::from(self.prefetch);
        loop {
            let first = tokio::select! {
                next = consumer.next() => next,
                () = context.stopped() => return Err(Stopped),
            };
            let mut deliveries = match first {
                Some(Ok(delivery)) => vec![delivery],
                Some(Err(error)) => return Ok(error.to_string()),
                None => return Ok("the server cancelled the consumer".to_owned()),
            };
            // What has arrived already, up to the prefetch (the server sends no more anyway).
            let mut lost = None;
            while deliveries.len() < limit {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(delivery))) => deliveries.push(delivery),
                    Some(Some(Err(error))) => {
                        lost = Some(error.to_string());
                        break;
                    }
                    Some(None) => {
                        lost = Some("the server cancelled the consumer".to_owned());
                        break;
                    }
                    None => break,
                }
            }
            if let Some(lost) = lost {
                // The channel is gone: these cannot be acknowledged, and come again.
                return Ok(lost);
            }
            let events: Vec<_> = deliveries
                .iter()
                .filter_map(|delivery| {
                    let headers = headers(delivery);
                    let body = Bytes::copy_from_slice(&delivery.data);
                    let parts = MessageParts {
                        queue: &self.queue,
                        exchange: delivery.exchange.as_str(),
                        routing_key: delivery.routing_key.as_str(),
                        message_id: delivery.properties.message_id().as_ref().map(|s| s.as_str()),
                        content_type: delivery.properties.content_type().as_ref().map(|s| s.as_str()),
                        timestamp: *delivery.properties.timestamp(),
                        headers: &headers,
                        body: &body,
                    };
                    let at = format!("queue '{}' delivery {}", self.queue, delivery.delivery_tag);
                    bad.event(context, message_event(&id.namespace, &id.name, parts), &at)
                })
                .collect();
            if !events.is_empty() {
                // Returns only once durable (or with `Stopped`: then nothing is acknowledged,
                // and closing the channel gives the messages back to the queue).
                context.deliver(events).await?;
            }
            let last = deliveries.last().map_or(0, |delivery| delivery.delivery_tag);
            if let Err(error) = channel.basic_ack(last, BasicAckOptions { multiple: true }).await {
                // They come again on the next connection: at least once.
                return Ok(format!("cannot acknowledge: {error}"));
            }
            context.report(None);
        }
    }
}

/// A delivery's headers as text ([`header_value`]).
fn headers(delivery: &lapin::message::Delivery) -> Vec<(String, Option<Vec<u8>>)> {
    delivery
        .properties
        .headers()
        .as_ref()
        .map(|table| table.inner().iter().map(|(name, value)| (name.to_string(), header_value(value))).collect())
        .unwrap_or_default()
}

#[async_trait]
impl Activity for Consumer {
    async fn run(&self, context: RunContext) {
        let mut bad = BadMessages::default();
        while !context.is_stopped() {
            let Ok((connection, channel, mut consumer)) = self.connect(&context).await else { return };
            // Connected and consuming: ready, even while the queue is empty.
            context.report(None);
            let pumped = self.pump(&context, &channel, &mut consumer, &mut bad).await;
            // Unacknowledged messages go back to the queue when the connection closes.
            let _ = connection.close(200, "switchyard source stopping".into()).await;
            match pumped {
                Ok(why) => message::lost(&context, UNAVAILABLE, &why),
                Err(Stopped) => return,
            }
            if context.sleep(RECONNECT_FIRST).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        Rabbitmq.validate(&spec)
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "connection": {"uri": "amqp://guest:guest@127.0.0.1:5672/%2f"},
            "rabbitmqResourcesConfig": {"queueName": "orders", "exchangeName": "shop"},
            "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
        })
    }

    #[test]
    fn knative_specs_are_accepted() {
        validate(valid()).unwrap();
        let mut spec = valid();
        spec["connection"] = serde_json::json!({"uriFromEnv": "RABBITMQ_URI"});
        spec["rabbitmqResourcesConfig"] = serde_json::json!({
            "vhost": "/prod", "queueName": "orders", "queueType": "classic", "parallelism": 10,
            "predeclared": true,
        });
        spec["serviceAccountName"] = serde_json::json!("");
        validate(spec).unwrap();
        let mut spec = valid();
        spec["rabbitmqResourcesConfig"]["routingKey"] = serde_json::json!("order.*");
        spec["rabbitmqResourcesConfig"]["queueType"] = serde_json::json!("quorum");
        validate(spec).unwrap();
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let config = |value: serde_json::Value| {
            let mut config = valid()["rabbitmqResourcesConfig"].clone();
            for (key, value) in value.as_object().unwrap() {
                config[key] = value.clone();
            }
            config
        };
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("connection", serde_json::json!({}), "spec.connection"),
            ("connection", serde_json::json!({"uri": "amqp://a/b", "uriFromEnv": "X"}), "spec.connection"),
            ("connection", serde_json::json!({"uri": "http://[::1"}), "spec.connection.uri"),
            ("connection", serde_json::json!({"uri": "amqps://h:5671/%2f"}), "spec.connection.uri"),
            ("connection", serde_json::json!({"uriFromEnv": "1X"}), "spec.connection.uriFromEnv"),
            ("rabbitmqResourcesConfig", serde_json::json!(null), "spec.rabbitmqResourcesConfig"),
            (
                "rabbitmqResourcesConfig",
                config(serde_json::json!({"queueName": ""})),
                "spec.rabbitmqResourcesConfig.queueName",
            ),
            (
                "rabbitmqResourcesConfig",
                config(serde_json::json!({"queueName": "a\nb"})),
                "spec.rabbitmqResourcesConfig.queueName",
            ),
            (
                "rabbitmqResourcesConfig",
                config(serde_json::json!({"queueType": "stream"})),
                "spec.rabbitmqResourcesConfig.queueType",
            ),
            (
                "rabbitmqResourcesConfig",
                config(serde_json::json!({"exchangeName": ""})),
                "spec.rabbitmqResourcesConfig.exchangeName",
            ),
            (
                "rabbitmqResourcesConfig",
                config(serde_json::json!({"parallelism": 0})),
                "spec.rabbitmqResourcesConfig.parallelism",
            ),
            (
                "rabbitmqResourcesConfig",
                config(serde_json::json!({"routingKey": "x".repeat(256)})),
                "spec.rabbitmqResourcesConfig.routingKey",
            ),
            ("rabbitmqClusterReference", serde_json::json!({"name": "rabbit"}), "spec.rabbitmqClusterReference"),
            ("delivery", serde_json::json!({"retry": 3}), "spec.delivery"),
            ("serviceAccountName", serde_json::json!("adapter"), "spec.serviceAccountName"),
        ];
        for (field, value, expected) in cases {
            let mut spec = valid();
            spec[field] = value.clone();
            let error = validate(spec).expect_err(&value.to_string());
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{value}: {error}") };
            assert_eq!(actual, expected, "{value}: {error}");
        }
        let mut spec = valid();
        spec["queue"] = serde_json::json!("orders");
        assert!(validate(spec).is_err(), "unknown fields are refused");
        let mut spec = valid();
        spec["connection"]["password"] = serde_json::json!("p");
        assert!(validate(spec).unwrap_err().to_string().contains("spec.connection.password"));
    }

    #[test]
    fn passwords_are_not_repeated_in_messages() {
        let error = parse_uri("spec.connection.uri", "amqps://user:s3cret@host/%2f").unwrap_err();
        assert!(!error.contains("s3cret") && error.contains("user:***@host"), "{error}");
        assert_eq!(redact("amqp://host/%2f"), "amqp://host/%2f");
    }
}
