//! Which node runs what: work that must run on one node at a time (a source that fires on a
//! schedule, a consumer of a topic) is spread over *slots*, and each slot is held by one node.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

/// Stops what runs on slots this node is about to give up.
#[async_trait]
pub trait Release: Send + Sync + 'static {
    /// Returns once nothing runs on `slots` any more.
    async fn release(&self, slots: &BTreeSet<u32>);
}

/// The slots this node holds among the nodes of a cluster.
///
/// Architecture invariant: a slot changes owner only after its old owner's [`Release`] has
/// returned, so work placed on a slot runs on at most one node at a time (between nodes that
/// reach each other; see the backend for what a network partition does).
#[async_trait]
pub trait Placement: Send + Sync + 'static {
    /// How many slots work is spread over (at least 1).
    fn slots(&self) -> u32;

    /// The slots this node holds now; changes as nodes come and go. A slot about to be given
    /// up leaves this set before [`Release::release`] is called for it.
    fn held(&self) -> watch::Receiver<BTreeSet<u32>>;

    /// Sets what stops the work of slots this node gives up. Called once, before work starts.
    fn on_release(&self, release: Arc<dyn Release>);

    /// Gives every slot up (at shutdown, once nothing runs), so that other nodes take the work
    /// over at once rather than when this node's lease expires.
    async fn leave(&self) {}
}

/// One node, one slot, held for good: the placement of a backend that is not shared.
pub struct SingleNode(watch::Sender<BTreeSet<u32>>);

impl Default for SingleNode {
    fn default() -> SingleNode {
        SingleNode(watch::channel(BTreeSet::from([0])).0)
    }
}

impl Placement for SingleNode {
    fn slots(&self) -> u32 {
        1
    }

    fn held(&self) -> watch::Receiver<BTreeSet<u32>> {
        self.0.subscribe()
    }

    /// Nothing is ever given up.
    fn on_release(&self, _: Arc<dyn Release>) {}
}

/// The slot of a piece of work named `name`: FNV-1a of the name, stable across versions and
/// nodes.
pub fn slot_of(name: &str, slots: u32) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    hash % slots.max(1)
}
