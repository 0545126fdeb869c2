//! The placement of one-node work on Kafka: its slots are [`Leases`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use switchyard_log::{LogError, Placement, Release};
use tokio::sync::watch;

use super::Leases;
use crate::config::KafkaConfig;

/// The slots work is spread over: the partitions of the lease topic. More slots than nodes
/// spreads work evenly; a cluster whose lease topic was made with another count keeps its own.
const SLOTS: u32 = 16;

/// [`Placement`] on Kafka: a slot is a partition of [`KafkaConfig::leases_topic`], held by the
/// node Kafka's group protocol assigns it to ([`Leases`]), so work placed on a slot runs on one
/// live node, and moves only once its old node's [`Release`] returned (see [`Leases`] for a node
/// cut off from Kafka).
pub struct KafkaPlacement {
    slots: u32,
    held: watch::Receiver<BTreeSet<u32>>,
    release: Arc<Mutex<Option<Arc<dyn Release>>>>,
    leases: tokio::sync::Mutex<Option<Leases>>,
}

impl std::fmt::Debug for KafkaPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPlacement").field("slots", &self.slots).field("held", &*self.held.borrow()).finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KafkaPlacement {
    /// Joins the cluster's lease group (creating the lease topic with 16 slots if missing).
    /// The first slots arrive moments later, with the group's first rebalance. Fails with
    /// `LogError::Unavailable`, naming the address, when the cluster does not answer within
    /// [`KafkaConfig::connect_timeout`].
    pub async fn join(config: &KafkaConfig) -> Result<KafkaPlacement, LogError> {
        let release: Arc<Mutex<Option<Arc<dyn Release>>>> = Arc::default();
        let hook = Arc::clone(&release);
        let runtime = tokio::runtime::Handle::current();
        // Called on the lease thread, which is not a runtime worker: it may block. Slots given
        // up before a hook is set had nothing running on them.
        let leases = Leases::join(config, SLOTS, move |slots| {
            let release = lock(&hook).clone();
            if let Some(release) = release {
                runtime.block_on(release.release(slots));
            }
        })
        .await?;
        Ok(KafkaPlacement {
            slots: leases.slots(),
            held: leases.held(),
            release,
            leases: tokio::sync::Mutex::new(Some(leases)),
        })
    }
}

#[async_trait]
impl Placement for KafkaPlacement {
    fn slots(&self) -> u32 {
        self.slots
    }

    fn held(&self) -> watch::Receiver<BTreeSet<u32>> {
        self.held.clone()
    }

    fn on_release(&self, release: Arc<dyn Release>) {
        *lock(&self.release) = Some(release);
    }

    async fn leave(&self) {
        if let Some(leases) = self.leases.lock().await.take() {
            leases.leave().await;
        }
        // Nothing is released any more; the hook may hold what holds this placement.
        lock(&self.release).take();
    }
}
