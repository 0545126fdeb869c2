//! The sources' HTTP sink over the delivery client: a source whose sink is a URI gets each
//! event POSTed in binary mode, as a subscriber would, with the sink's `CACerts` trusted and a
//! token for its `audience`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchyard_dispatcher::ca_certs::CaCerts;
use switchyard_dispatcher::http_client::Attempt;
use switchyard_dispatcher::identity::Identity;
use switchyard_dispatcher::{this_node, DeliveryClient, Format, Target};
use switchyard_event::Event;
use switchyard_sources::{HttpOptions, HttpSink, SinkError, SourceRef};
use url::Url;

/// How long one POST to a sink URI may take.
const SINK_TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs sources' events with the delivery client.
pub(crate) struct HttpPoster {
    client: DeliveryClient,
}

impl HttpPoster {
    pub(crate) fn new(client: DeliveryClient) -> HttpPoster {
        HttpPoster { client }
    }
}

#[async_trait]
impl HttpSink for HttpPoster {
    async fn post(
        &self,
        source: &SourceRef,
        uri: &Url,
        options: &HttpOptions,
        events: Vec<Event>,
    ) -> Result<(), SinkError> {
        // Checked when declared: a bundle that no longer parses is a failed send, retried.
        let ca_certs = options
            .ca_certs
            .as_deref()
            .map(CaCerts::parse)
            .transpose()
            .map_err(|error| SinkError::Unavailable(format!("the sink's CACerts {error}")))?;
        let target = Target {
            url: uri.clone(),
            format: Format::Binary,
            header_encoding: None,
            namespace: source.namespace.clone(),
            timeout: SINK_TIMEOUT,
            signer: None,
            identity: options
                .audience
                .as_deref()
                .map(|audience| Identity::of_source(source.kind, &source.namespace, &source.name, audience)),
            ca_certs,
            sender: Arc::from(this_node::source_subject(source.kind, &source.namespace, &source.name)),
        };
        let origin = source.to_string();
        for event in &events {
            let attempt = Attempt { trigger: &origin, number: 1, dead_letter: false };
            self.client
                .send(&target, event, attempt)
                .await
                .map_err(|failure| SinkError::Unavailable(format!("sink '{uri}' did not take the event: {failure}")))?;
        }
        Ok(())
    }
}
