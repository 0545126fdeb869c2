//! Where a source's events go: a broker of its namespace, through the engine's admission (the
//! one way events enter a broker), or an HTTP endpoint, through the engine's delivery client.

use std::sync::Arc;

use async_trait::async_trait;
use switchyard_event::limits::LimitExceeded;
use switchyard_event::{AttrValue, Event};
use switchyard_log::{Admit, Origin, Refusal};
use url::Url;

use crate::resource::{Sink, SourceRef};

/// A source's HTTP sink: what the engine provides over its delivery client.
#[async_trait]
pub trait HttpSink: Send + Sync + 'static {
    /// POSTs the events of `source` to `uri` one after the other in binary mode; returns once
    /// each was answered 2xx.
    async fn post(&self, source: &SourceRef, uri: &Url, events: Vec<Event>) -> Result<(), SinkError>;
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
    overrides: Arc<[(String, AttrValue)]>,
    outlets: Outlets,
}

impl Emitter {
    pub(crate) fn new(source: SourceRef, sink: Sink, overrides: Vec<(String, AttrValue)>, outlets: Outlets) -> Emitter {
        Emitter { source, sink, overrides: overrides.into(), outlets }
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
            Sink::Uri(uri) => self.outlets.http.post(&self.source, uri, events).await,
            Sink::KafkaSink(sink) => self.outlets.kafka_sinks.write(&self.source, sink, events).await,
        }
    }
}

/// A sink as Knative's `status.sinkUri` shows it: the URI, or the broker's ingest URL (the
/// KafkaSink's address) on this server (`base_url`).
pub(crate) fn sink_uri(base_url: &str, namespace: &str, sink: &Sink) -> String {
    match sink {
        Sink::Broker(broker) => format!("{base_url}/{namespace}/{broker}"),
        Sink::Uri(uri) => uri.to_string(),
        Sink::KafkaSink(sink) => switchyard_meta::kafka_sink::address(base_url, namespace, sink),
    }
}
