//! Knative Brokers of Switchyard's class and their Triggers, reconciled into this node's
//! declarations. (Being written: the broker-class work.)

use std::sync::Arc;

use switchyard_engine::Engine;

/// What the reconciler needs to know of this node.
#[derive(Debug, Clone)]
pub struct BrokerClass {
    /// The `eventing.knative.dev/broker.class` value reconciled here.
    pub class: String,
    /// Where this node serves ingest (`http://host:port`), for the brokers' addresses.
    pub base_url: String,
}

/// Starts reconciling; runs until the handle is aborted.
pub fn start(client: kube::Client, engine: Arc<Engine>, settings: BrokerClass) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = (client, engine, settings);
    })
}
