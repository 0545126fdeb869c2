//! Where a source's events go: a broker of its namespace, through the binary's own ingest, or
//! an HTTP endpoint.

use std::sync::Arc;

use async_trait::async_trait;
use switchyard_event::{AttrValue, Event};
use url::Url;

use crate::resource::{Sink, SourceRef};

/// What the binary provides to sources: its broker ingest and its HTTP client.
#[async_trait]
pub trait Sinks: Send + Sync + 'static {
    /// Appends `events` to broker `namespace/broker` as HTTP ingest does (arrival time, hop
    /// budget) and returns once they are durable.
    async fn append(&self, namespace: &str, broker: &str, events: Vec<Event>) -> Result<(), SinkError>;

    /// POSTs the events of `source` to `uri` one after the other in binary mode; returns once
    /// each was answered 2xx.
    async fn post(&self, source: &SourceRef, uri: &Url, events: Vec<Event>) -> Result<(), SinkError>;

    /// Whether broker `namespace/broker` exists.
    fn broker_exists(&self, namespace: &str, broker: &str) -> bool;
}

/// Why a sink did not take the events; every one is worth retrying later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The sink names a broker that does not exist (yet).
    #[error("broker '{0}' does not exist")]
    UnknownBroker(String),
    /// The broker's storage or the sink URI cannot take them now.
    #[error("{0}")]
    Unavailable(String),
}

/// Sends one source's events to its sink, with its `ceOverrides` applied.
#[derive(Clone)]
pub struct Emitter {
    source: SourceRef,
    sink: Sink,
    overrides: Arc<[(String, AttrValue)]>,
    sinks: Arc<dyn Sinks>,
}

impl Emitter {
    pub(crate) fn new(
        source: SourceRef,
        sink: Sink,
        overrides: Vec<(String, AttrValue)>,
        sinks: Arc<dyn Sinks>,
    ) -> Emitter {
        Emitter { source, sink, overrides: overrides.into(), sinks }
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
            Sink::Broker(broker) => self.sinks.append(&self.source.namespace, broker, events).await,
            Sink::Uri(uri) => self.sinks.post(&self.source, uri, events).await,
        }
    }
}

/// A sink as Knative's `status.sinkUri` shows it: the URI, or the broker's ingest URL on this
/// server (`base_url`).
pub(crate) fn sink_uri(base_url: &str, namespace: &str, sink: &Sink) -> String {
    match sink {
        Sink::Broker(broker) => format!("{base_url}/{namespace}/{broker}"),
        Sink::Uri(uri) => uri.to_string(),
    }
}
