//! Source adapters: what happens elsewhere — a GitHub webhook delivery, a cron tick, a record on
//! a Kafka topic — turned into CloudEvents on a broker (or any HTTP sink), declared with
//! Knative's kinds and spec fields and run inside the serving process.
//!
//! # Shape
//!
//! - **One folder per source** ([`github`], [`ping`], [`kafka`]): its spec (the Knative fields,
//!   validated on the way in), and what runs. Adding a source is its folder plus one line in
//!   [`kinds`].
//! - **Two behaviours**: an [`Activity`] runs while this node holds the source (a timer, a
//!   consumer); a [`Webhook`] turns requests on `/webhooks/{path}/{ns}/{name}` into events, on
//!   whichever node they reach.
//! - **The runtime** ([`Sources`]) keeps every declared source compiled, runs the activities of
//!   the sources this node holds (the backend's `Placement`: all of them on the embedded log, a
//!   share of them on Kafka), and sends what they produce through [`Outlets`]: the engine's
//!   admission into brokers (the one way events enter a broker) and its HTTP client.
//! - **Clients** a kind needs from outside (a Kafka client for KafkaSource) come as traits
//!   ([`Clients`]): this crate names no backend.
//!
//! # The promise
//!
//! Invariant: nothing is acknowledged upstream before it is durable downstream. An upstream
//! acknowledgement — a 2xx to GitHub, a committed Kafka offset, a recorded tick —
//! happens only after the events are durable on the broker (or accepted by the sink URI): a
//! crash between the two repeats the events, it never loses them.

pub mod apiserver;
pub mod github;
pub mod kafka;
pub mod message;
pub mod metrics;
pub mod mqtt;
pub mod nats;
pub mod ping;
pub mod rabbitmq;
pub mod redis_streams;
mod resource;
mod runtime;
mod sink;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use switchyard_event::Event;
use switchyard_log::addresses::Addresses;
use switchyard_log::records::{RecordConnector, RecordProducer};
use switchyard_meta::ValidationError;

pub use crate::resource::{parse_source, CeOverrides, Declared, Sink, SinkSpec, Source, SourceRef};
pub use crate::runtime::{Sources, Stopped, WebhookAnswer, WebhookFailure, WebhookTarget};
pub use crate::sink::{Emitter, HttpOptions, HttpSink, KafkaSinkOutlet, Outlets, SinkError};

/// Every kind of source, in the order the API lists them. Adding a source is its folder plus
/// one line here: the REST routes, the OpenAPI enum of kinds and the CLI's kinds come from
/// this list.
pub fn kinds() -> &'static [&'static dyn SourceKind] {
    &[
        &github::GitHub,
        &ping::Ping,
        &kafka::Kafka,
        &nats::Nats,
        &rabbitmq::Rabbitmq,
        &mqtt::Mqtt,
        &redis_streams::RedisStream,
        &apiserver::ApiServer,
    ]
}

/// Clients of outside systems that some kinds need, given by the binary (which links them).
#[derive(Clone, Default)]
pub struct Clients {
    /// Connects consumers to Kafka clusters (KafkaSource); `None` in a build without Kafka.
    pub kafka: Option<Arc<dyn RecordConnector>>,
    /// Writes records to Kafka clusters (KafkaSink, which the engine runs); `None` in a build
    /// without Kafka.
    pub kafka_producer: Option<Arc<dyn RecordProducer>>,
    /// The Kubernetes API server `serve` was given (ApiServerSource's cluster when its spec
    /// names no kubeconfig); `None` when it was given none.
    pub kubernetes: Option<KubeCluster>,
    /// Resolves `ref` destinations other than Switchyard's own objects (a trigger's subscriber
    /// and dead-letter sink, a source's sink) through that API server; `None` without one.
    pub addresses: Option<Arc<dyn Addresses>>,
}

/// A Kubernetes API server, and a client of it.
#[derive(Clone)]
pub struct KubeCluster {
    /// The client.
    pub client: kube::Client,
    /// The server's URL (`https://127.0.0.1:16443`): ApiServerSource's events' `source`.
    pub url: String,
}

/// The kind whose REST path segment is `plural` (`pingsources`).
pub fn kind_by_plural(plural: &str) -> Option<&'static dyn SourceKind> {
    kinds().iter().copied().find(|kind| kind.plural() == plural)
}

/// The kind named `name` (`PingSource`), case-insensitively: shared declarations key it in
/// lower case.
pub fn kind_by_name(name: &str) -> Option<&'static dyn SourceKind> {
    kinds().iter().copied().find(|kind| kind.kind().eq_ignore_ascii_case(name))
}

/// One kind of source: how it is declared, and what runs for it.
pub trait SourceKind: Send + Sync + 'static {
    /// The Knative kind, e.g. `PingSource`.
    fn kind(&self) -> &'static str;

    /// The REST path segment, e.g. `pingsources`.
    fn plural(&self) -> &'static str;

    /// The accepted `apiVersion`s; the first is the one stored and answered.
    fn api_versions(&self) -> &'static [&'static str];

    /// Validates a submitted `spec` (the whole object, `null` when absent) and returns its
    /// canonical form, which is stored. Errors name the field under `spec.`.
    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError>;

    /// What runs for a declared source whose spec passed [`SourceKind::validate`], with the
    /// outside clients this node has. A source that cannot run here yet (a secret missing from
    /// the environment, no Kafka client in this build) is not ready, with why.
    fn compile(&self, source: &Declared, clients: &Clients) -> Result<Behaviour, NotReady>;

    /// The schema of the kind's spec, for the API documentation.
    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> SpecSchema;

    /// A note for the `Ready=True` condition of a source that runs as declared: a property of
    /// what was declared the user should see (a delivery guarantee weaker than at least once),
    /// as a reason and message.
    fn ready_note(&self, _source: &Declared) -> Option<(&'static str, String)> {
        None
    }

    /// For a webhook source, the path segment of its endpoint: `/webhooks/{path}/{ns}/{name}`.
    fn webhook_path(&self) -> Option<&'static str> {
        None
    }
}

/// A kind's spec as the OpenAPI document describes it: its schema's name, the schema, and
/// the schemas it refers to.
#[cfg(feature = "openapi")]
pub struct SpecSchema {
    /// The component name, e.g. `PingSourceSpec`.
    pub name: String,
    /// The spec's schema.
    pub schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    /// The components it refers to.
    pub components: Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>,
}

#[cfg(feature = "openapi")]
impl SpecSchema {
    /// The schema of spec type `S`.
    pub fn of<S: utoipa::ToSchema>() -> SpecSchema {
        let mut components = Vec::new();
        S::schemas(&mut components);
        SpecSchema { name: S::name().into_owned(), schema: S::schema(), components }
    }
}

/// Why a declared source does not run: a Knative condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// CamelCase, e.g. `SecretNotFound`.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

/// What runs for a source.
pub enum Behaviour {
    /// Runs while this node holds the source.
    Active(Arc<dyn Activity>),
    /// Answers webhook requests, on every node.
    Webhook(Arc<dyn Webhook>),
}

/// A source that does something by itself while it runs: fires on a schedule, consumes a topic.
#[async_trait]
pub trait Activity: Send + Sync + 'static {
    /// Runs until `context.stopped()`; it may be started again later (on this node or another),
    /// so everything it must not repeat is recorded in `context.state()` or upstream.
    async fn run(&self, context: runtime::RunContext);
}

/// A source that turns HTTP requests into events.
pub trait Webhook: Send + Sync + 'static {
    /// Authenticates and decodes one request. Pure: no I/O. The runtime deduplicates the events
    /// by `id`, sends them to the sink, and answers 202 once they are durable.
    fn receive(&self, headers: &http::HeaderMap, body: &Bytes) -> Result<Receipt, WebhookError>;
}

/// What a webhook request carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Receipt {
    /// Events to send to the sink.
    Events(Vec<Event>),
    /// Nothing to send, and nothing wrong: answered 200 so that the sender does not retry (an
    /// event type the source does not take, a ping), with why.
    Ignored(String),
}

/// A webhook request refused; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong signature: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Missing headers, malformed body: 400.
    #[error("{0}")]
    BadRequest(String),
    /// A body in a media type the source does not read: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
}

pub use crate::runtime::RunContext;
