//! Kafka mode: the brokers and triggers of every node sharing a Kafka cluster and topic prefix
//! live in one compacted topic, `{prefix}config` (Kafka Connect's config-topic pattern). Each
//! node follows it from the beginning and applies every change through its controller, so a
//! declaration made on any node is active on all of them within moments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchyard_log::LogError;
use switchyard_log_kafka::{CompactedTopic, KafkaConfig};
use tokio::sync::mpsc;

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
