//! The declaration log on Kafka: the compacted topic `{prefix}config` (Kafka Connect's
//! config-topic pattern), which every node follows from the beginning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use switchyard_log::{Change, Changes, DeclarationLog, LogError};
use tokio::sync::mpsc;

use super::CompactedTopic;
use crate::config::KafkaConfig;

/// [`DeclarationLog`] on Kafka: every change is a record of
/// [`KafkaConfig::declarations_topic`] keyed by the resource (a deletion is a tombstone), so
/// compaction keeps the last value of each. Every node follows the topic and numbers the changes
/// in the order it reads them, which is the topic's order: the same on every node.
pub struct KafkaDeclarations {
    topic: CompactedTopic,
    /// Changes queued for the applier so far; the next one gets this sequence number.
    received: Arc<AtomicU64>,
    /// Handed out once.
    changes: Mutex<Option<Changes>>,
}

impl std::fmt::Debug for KafkaDeclarations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDeclarations").field("topic", &self.topic.topic()).finish_non_exhaustive()
    }
}

impl KafkaDeclarations {
    /// Follows the declarations topic, creating it if missing; returns once every change
    /// already in it is queued for [`changes`](DeclarationLog::changes), in order (the replay).
    pub async fn open(config: &KafkaConfig) -> Result<KafkaDeclarations, LogError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let topic = CompactedTopic::open(config, &config.declarations_topic(), move |key, value| {
            // Runs on the follower's thread, in log order: numbering here makes the sequence
            // the order in which every node applies changes.
            let sequence = counter.fetch_add(1, Ordering::SeqCst);
            let key = String::from_utf8_lossy(key).into_owned();
            // The applier may be gone (shutting down), which changes nothing stored.
            let _ = sender.send(Change { sequence, key, value: value.map(<[u8]>::to_vec) });
        })
        .await?;
        let replayed = received.load(Ordering::SeqCst);
        Ok(KafkaDeclarations { topic, received, changes: Mutex::new(Some(Changes { receiver, replayed })) })
    }
}

#[async_trait]
impl DeclarationLog for KafkaDeclarations {
    async fn publish(&self, key: &str, value: Option<Vec<u8>>) -> Result<u64, LogError> {
        match value {
            Some(value) => self.topic.put(key.as_bytes(), &value).await?,
            None => self.topic.delete(key.as_bytes()).await?,
        }
        // The write returns once the follower has queued it, so it is at or before the last
        // change queued.
        Ok(self.received.load(Ordering::SeqCst).saturating_sub(1))
    }

    fn changes(&self) -> Result<Changes, LogError> {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| LogError::Unavailable("the declaration changes were already taken".to_owned()))
    }
}
