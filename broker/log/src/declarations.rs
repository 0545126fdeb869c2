//! Where declarations live: an ordered, durable log of changes keyed by resource, which every
//! node of a cluster applies in the same order (Kafka Connect's config-topic pattern).
//!
//! A single node (the embedded backend) keeps it in its data directory and hands each change
//! to the node's own applier at once; a cluster (Kafka) keeps it in a compacted topic that
//! every node follows. Either way there is one way a declaration takes effect: it is
//! published here, then applied from here.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::LogError;

/// A change of one declaration, read back from the declaration log in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its position: changes are numbered from 0 in the order every node applies them.
    pub sequence: u64,
    /// The resource: `<kind>/<namespace>/<name>`, the kind in lower case.
    pub key: String,
    /// The resource as stored (JSON), or `None` when it was deleted.
    pub value: Option<Vec<u8>>,
}

/// The changes a node applies: first every declaration that exists (the replay), then each
/// change as it is published, on this node or any other.
#[derive(Debug)]
pub struct Changes {
    /// The changes, in sequence order.
    pub receiver: mpsc::UnboundedReceiver<Change>,
    /// How many changes the replay holds: once the changes numbered below this are applied,
    /// the node runs every declaration made before it started.
    pub replayed: u64,
}

/// A durable, ordered log of declaration changes, compacted to the last value of each key.
#[async_trait]
pub trait DeclarationLog: Send + Sync + 'static {
    /// Publishes a change (`None` deletes). Returns once it is durable, with a sequence number
    /// at or after the change's own: once every change below `sequence + 1` is applied, so is
    /// this one.
    async fn publish(&self, key: &str, value: Option<Vec<u8>>) -> Result<u64, LogError>;

    /// The changes to apply. Called once, before the first `publish`; a second call fails.
    fn changes(&self) -> Result<Changes, LogError>;
}
