//! Kafka mode: the brokers, triggers and sources of every node sharing a Kafka cluster and
//! topic prefix live in one compacted topic, `{prefix}config` (Kafka Connect's config-topic
//! pattern). Each node follows it from the beginning and applies every change through its
//! controller, so a declaration made on any node is active on all of them within moments. The
//! sources' activities run on one node each: [`KafkaPlacement`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use switchyard_log::{LogError, StateStore};
use switchyard_log_kafka::{CompactedTopic, KafkaConfig, Leases};
use switchyard_sources::{Placement, Sinks, Sources};
use tokio::sync::{mpsc, watch};

use crate::controller::{Change, SharedDeclarations};

/// The config topic, as a [`SharedDeclarations`].
pub struct KafkaDeclarations {
    topic: CompactedTopic,
    /// Changes handed to the controller so far; the next one gets this sequence number.
    received: Arc<AtomicU64>,
}

impl KafkaDeclarations {
    /// Follows `{prefix}config`; returns with every change already in the topic queued on the
    /// receiver, in order, for [`crate::controller::Controller::apply`].
    pub async fn open(config: &KafkaConfig) -> Result<(KafkaDeclarations, mpsc::UnboundedReceiver<Change>), LogError> {
        let (changes, receiver) = mpsc::unbounded_channel();
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let topic = CompactedTopic::open(config, &format!("{}config", config.topic_prefix), move |key, value| {
            // Runs on the follower's thread, in log order: numbering here makes the sequence
            // the order in which the controller applies changes.
            let sequence = counter.fetch_add(1, Ordering::SeqCst);
            let key = String::from_utf8_lossy(key).into_owned();
            let _ = changes.send(Change { sequence, key, value: value.map(<[u8]>::to_vec) });
        })
        .await?;
        Ok((KafkaDeclarations { topic, received }, receiver))
    }

    /// How many changes have been queued for the controller: once it has applied this many,
    /// it has everything read so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl SharedDeclarations for KafkaDeclarations {
    async fn publish(&self, key: &str, value: Option<Vec<u8>>) -> Result<u64, LogError> {
        match value {
            Some(value) => self.topic.put(key.as_bytes(), &value).await?,
            None => self.topic.delete(key.as_bytes()).await?,
        }
        // The write returns once the follower has queued it, so it is at or before the last
        // change queued.
        Ok(self.received().saturating_sub(1))
    }
}

/// The slots sources are shared out over: the partitions of `{prefix}leases`. More slots than
/// nodes spreads sources evenly; a cluster made with another count keeps its own.
const SOURCE_SLOTS: u32 = 16;

/// The sources' placement on Kafka: a slot is a partition of the lease topic, held by the node
/// Kafka's group protocol assigns it to ([`Leases`]), so each source runs on one live node.
pub struct KafkaPlacement {
    slots: u32,
    held: watch::Receiver<BTreeSet<u32>>,
    leases: tokio::sync::Mutex<Option<Leases>>,
}

impl KafkaPlacement {
    /// Joins the cluster's lease group and starts the sources runtime on the slots this node
    /// gets. Before a slot is given up, what runs on it is stopped.
    pub async fn start_sources(
        config: &KafkaConfig,
        sinks: Arc<dyn Sinks>,
        state: Arc<dyn StateStore>,
    ) -> Result<Arc<Sources>, LogError> {
        let runtime: Arc<OnceLock<Weak<Sources>>> = Arc::default();
        let releasing = Arc::clone(&runtime);
        let handle = tokio::runtime::Handle::current();
        // Called on the lease thread, which is not a runtime worker: it may block.
        let leases = Leases::join(config, SOURCE_SLOTS, move |slots| {
            if let Some(sources) = releasing.get().and_then(Weak::upgrade) {
                handle.block_on(sources.release(slots));
            }
        })
        .await?;
        let placement = KafkaPlacement {
            slots: leases.slots(),
            held: leases.held(),
            leases: tokio::sync::Mutex::new(Some(leases)),
        };
        let sources = Sources::start(sinks, state, Arc::new(placement));
        let _ = runtime.set(Arc::downgrade(&sources));
        Ok(sources)
    }
}

#[async_trait::async_trait]
impl Placement for KafkaPlacement {
    fn slots(&self) -> u32 {
        self.slots
    }

    fn held(&self) -> watch::Receiver<BTreeSet<u32>> {
        self.held.clone()
    }

    async fn leave(&self) {
        if let Some(leases) = self.leases.lock().await.take() {
            leases.leave().await;
        }
    }
}
