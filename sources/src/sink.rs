//! Where a source's events go: a broker of its namespace, through the engine's admission (the
//! one way events enter a broker), a KafkaSink, or an HTTP endpoint, through the engine's
//! delivery client — given as a URI, or as any object with an address, resolved through the API
//! server (`Clients::addresses`) each time events are sent, so that a changed address is
//! followed at the next send.

use std::sync::Arc;

use async_trait::async_trait;
use switchyard_event::limits::LimitExceeded;
use switchyard_event::{AttrValue, Event};
use switchyard_log::addresses::{Addresses, ObjectRef};
use switchyard_log::{Admit, Origin, Refusal};
use url::Url;

use crate::resource::{Sink, SourceRef};

/// A source's HTTP sink: what the engine provides over its delivery client.
#[async_trait]
pub trait HttpSink: Send + Sync + 'static {
    /// POSTs the events of `source` to `uri` one after the other in binary mode, as `options`
    /// say; returns once each was answered 2xx.
    async fn post(
        &self,
        source: &SourceRef,
        uri: &Url,
        options: &HttpOptions,
        events: Vec<Event>,
    ) -> Result<(), SinkError>;
}

/// How a source's HTTP sink is reached (Knative's Destination fields besides the address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpOptions {
    /// `audience`: each POST carries an OIDC token for it, with the source as its subject.
    pub audience: Option<String>,
    /// `CACerts`: PEM certificates its TLS connections trust besides the built-in roots.
    pub ca_certs: Option<String>,
}

/// Why a sink did not take the events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The sink names a broker that does not exist (yet): worth retrying later.
    #[error("broker '{0}' does not exist")]
    UnknownBroker(String),
    /// The broker's storage or the sink URI cannot take them now: worth retrying later.
    #[error("{0}")]
    Unavailable(String),
    /// The broker refuses them for good (an event over a limit): never worth retrying.
    #[error(transparent)]
    Refused(LimitExceeded),
    /// The sink names an object whose address cannot be resolved now: worth retrying later.
    #[error("{0}")]
    Unresolved(String),
}

impl From<Refusal> for SinkError {
    fn from(refusal: Refusal) -> SinkError {
        match refusal {
            Refusal::UnknownBroker(broker) => SinkError::UnknownBroker(broker),
            Refusal::Limit(limit) => SinkError::Refused(limit),
            stopping_or_unavailable => SinkError::Unavailable(stopping_or_unavailable.to_string()),
        }
    }
}

/// A source's KafkaSink: what the engine provides over its Kafka producer.
#[async_trait]
pub trait KafkaSinkOutlet: Send + Sync + 'static {
    /// Writes the events of `source` to KafkaSink `sink` of its namespace, in order; returns once
    /// Kafka acknowledged each.
    async fn write(&self, source: &SourceRef, sink: &str, events: Vec<Event>) -> Result<(), SinkError>;
}

/// What a source's events go through: admission into brokers, the HTTP sink, KafkaSinks.
#[derive(Clone)]
pub struct Outlets {
    /// The engine's admission.
    pub admission: Arc<dyn Admit>,
    /// The engine's delivery client.
    pub http: Arc<dyn HttpSink>,
    /// The engine's KafkaSinks.
    pub kafka_sinks: Arc<dyn KafkaSinkOutlet>,
}

/// Sends one source's events to its sink, with its `ceOverrides` applied.
#[derive(Clone)]
pub struct Emitter {
    source: SourceRef,
    sink: Sink,
    http: Arc<HttpOptions>,
    overrides: Arc<[(String, AttrValue)]>,
    outlets: Outlets,
    addresses: Option<Arc<dyn Addresses>>,
}

impl Emitter {
    pub(crate) fn new(source: SourceRef, sink: Sink, overrides: Vec<(String, AttrValue)>, outlets: Outlets) -> Emitter {
        Emitter { source, sink, http: Arc::default(), overrides: overrides.into(), outlets, addresses: None }
    }

    /// Reaches an HTTP sink as `options` say.
    pub(crate) fn with_http_options(mut self, options: HttpOptions) -> Emitter {
        self.http = Arc::new(options);
        self
    }

    /// Resolves a sink that names an object through `addresses`.
    pub(crate) fn with_addresses(mut self, addresses: Option<Arc<dyn Addresses>>) -> Emitter {
        self.addresses = addresses;
        self
    }

    /// One attempt: `Ok` once every event is durable on the broker (or accepted by the URI).
    pub async fn emit(&self, mut events: Vec<Event>) -> Result<(), SinkError> {
        for event in &mut events {
            for (name, value) in self.overrides.iter() {
                // Names were validated at declaration: a failure here cannot happen.
                let _ = event.set_extension(name, value.clone());
            }
        }
        match &self.sink {
            Sink::Broker(broker) => {
                let origin = Origin::Source(self.source.to_string());
                self.outlets.admission.admit(&self.source.namespace, broker, events, origin).await?;
                Ok(())
            }
            Sink::Uri(uri) => self.outlets.http.post(&self.source, uri, &self.http, events).await,
            Sink::KafkaSink(sink) => self.outlets.kafka_sinks.write(&self.source, sink, events).await,
            Sink::Object { reference, path } => {
                let uri = resolve(self.addresses.as_deref(), reference, path.as_deref()).await?;
                self.outlets.http.post(&self.source, &uri, &self.http, events).await
            }
        }
    }
}

/// The address of a sink that names an object, its `uri` joined.
async fn resolve(
    addresses: Option<&dyn Addresses>,
    reference: &ObjectRef,
    path: Option<&str>,
) -> Result<Url, SinkError> {
    let addresses = addresses.ok_or_else(|| SinkError::Unresolved(no_api_server(reference)))?;
    let resolved = addresses.resolve(reference).await.map_err(SinkError::Unresolved)?;
    let joined = Sink::address(&resolved, path).map_err(SinkError::Unresolved)?;
    Url::parse(&joined).map_err(|e| SinkError::Unresolved(format!("the address '{joined}' of {reference}: {e}")))
}

fn no_api_server(reference: &ObjectRef) -> String {
    format!("{reference} cannot be resolved: this server has no Kubernetes API server (serve --kubeconfig)")
}

/// A sink naming an object, as far as it is known now without waiting: its address, or why
/// there is none (`None` when nothing is known yet).
pub(crate) fn cached_object_address(
    addresses: Option<&dyn Addresses>,
    reference: &ObjectRef,
    path: Option<&str>,
) -> Option<Result<String, String>> {
    let Some(addresses) = addresses else { return Some(Err(no_api_server(reference))) };
    Some(addresses.cached(reference)?.and_then(|resolved| Sink::address(&resolved, path)))
}

/// A sink as Knative's `status.sinkUri` shows it: the URI, or the broker's ingest URL (the
/// KafkaSink's address) on this server (`base_url`), or an object's address as last resolved
/// (`None` while it is not).
pub(crate) fn sink_uri(
    base_url: &str,
    namespace: &str,
    sink: &Sink,
    addresses: Option<&dyn Addresses>,
) -> Option<String> {
    match sink {
        Sink::Broker(broker) => Some(format!("{base_url}/{namespace}/{broker}")),
        Sink::Uri(uri) => Some(uri.to_string()),
        Sink::KafkaSink(sink) => Some(switchyard_meta::kafka_sink::address(base_url, namespace, sink)),
        Sink::Object { reference, path } => cached_object_address(addresses, reference, path.as_deref())?.ok(),
    }
}
