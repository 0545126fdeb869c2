//! The node's own addresses served in-process ([`switchyard_dispatcher::this_node`]): a
//! trigger's or source's delivery to a broker or KafkaSink of its own namespace on this node
//! is admitted as the route would admit the sender's request, without the HTTP round trip that
//! would meet authentication and TLS.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use switchyard_dispatcher::this_node::{Refusal, ThisNode};
use switchyard_event::Event;

use crate::auth::{Principal, Role};
use crate::routes::{ingest, kafka_sinks, AppState, RouteClass};

/// This node's brokers and KafkaSinks, as deliveries from itself reach them. Installed before
/// the engine starts delivering, and serving once [`NodeAddresses::serve`] is given the state:
/// until then such a delivery is answered 503, which is retried (a 401 from the listener
/// would not be).
#[derive(Default)]
pub(crate) struct NodeAddresses {
    state: OnceLock<Arc<AppState>>,
}

impl NodeAddresses {
    pub(crate) fn serve(&self, state: Arc<AppState>) {
        let _ = self.state.set(state);
    }
}

enum Address<'a> {
    KafkaSink(&'a str),
    Broker(&'a str),
}

#[async_trait]
impl ThisNode for NodeAddresses {
    async fn deliver(&self, path: &str, namespace: &str, sender: &str, event: &Event) -> Option<Result<(), Refusal>> {
        if RouteClass::of(&Method::POST, path) != RouteClass::Ingest {
            return None;
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let address = match segments.as_slice() {
            ["kafkasinks", sink_namespace, name] if *sink_namespace == namespace => Address::KafkaSink(name),
            [broker_namespace, broker] if *broker_namespace == namespace => Address::Broker(broker),
            _ => return None,
        };
        let Some(state) = self.state.get() else {
            let message = "this node is starting: it takes its own deliveries once it serves".to_owned();
            return Some(Err(Refusal { status: StatusCode::SERVICE_UNAVAILABLE, message }));
        };
        let delivered = match address {
            Address::KafkaSink(name) => kafka_sinks::write(state, namespace, name, std::slice::from_ref(event)).await,
            Address::Broker(broker) => {
                let sender = Principal {
                    name: sender.to_owned(),
                    role: Role::Ingest { namespace: namespace.to_owned(), broker: Some(broker.to_owned()) },
                };
                ingest::admit_from_this_node(state, namespace, broker, &sender, event).await
            }
        };
        Some(delivered.map_err(|error| Refusal { status: error.status(), message: error.detail().to_owned() }))
    }
}
