//! Deliveries from this node to itself: a trigger whose subscriber or dead-letter sink is a
//! KafkaSink (its `ref` resolves to `http://<this node>/kafkasinks/…`), or a broker of this
//! node (a chained broker), and a source whose sink URI is one of them.
//!
//! Over HTTP such a delivery would meet the node's own front door: a bearer token it does not
//! have once authentication is on, a TLS listener it addresses in plain HTTP. So the
//! delivery client hands it to the node in-process instead, as the sender it is
//! ([`Target::sender`](crate::Target::sender)), which a broker's EventPolicies can name. Only
//! addresses in the sender's own namespace are taken this way: reaching another namespace's
//! broker or sink is an ordinary HTTP request, held to the same authentication as anyone's.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use switchyard_event::Event;

/// What the node answered, as an HTTP status and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status the HTTP route would answer.
    pub status: http::StatusCode,
    /// Why.
    pub message: String,
}

/// The node's own addresses, served in-process.
#[async_trait]
pub trait ThisNode: Send + Sync {
    /// Delivers `event` to the address at `path` on this node, from `sender` of `namespace`;
    /// `None` when `path` is not an address the node takes in-process for that namespace (the
    /// attempt then goes over HTTP).
    async fn deliver(&self, path: &str, namespace: &str, sender: &str, event: &Event) -> Option<Result<(), Refusal>>;
}

static INSTALLED: OnceLock<Arc<dyn ThisNode>> = OnceLock::new();

/// Makes `node` the process's: called once by `serve`, once it can take events. A later call
/// changes nothing.
pub fn install(node: Arc<dyn ThisNode>) {
    let _ = INSTALLED.set(node);
}

pub(crate) fn installed() -> Option<&'static Arc<dyn ThisNode>> {
    INSTALLED.get()
}

/// The subject a trigger's deliveries carry: in its OIDC tokens (`sub`), and as the sender of
/// what it delivers to this node.
pub fn trigger_subject(namespace: &str, name: &str) -> String {
    format!("system:switchyard:trigger:{namespace}:{name}")
}

/// The subject of a source's deliveries to this node (`kind` as Knative names it).
pub fn source_subject(kind: &str, namespace: &str, name: &str) -> String {
    format!("system:switchyard:source:{}:{namespace}:{name}", kind.to_ascii_lowercase())
}
