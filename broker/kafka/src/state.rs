//! The state table on Kafka: one compacted topic, `{prefix}state`, materialised in memory on
//! every node.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use switchyard_log::{LogError, StateStore};

use crate::cluster::CompactedTopic;
use crate::config::KafkaConfig;

/// [`StateStore`] on Kafka: every entry is a record of the compacted topic `{prefix}state`
/// (key and value as given; a removal is a tombstone), and every node keeps the whole table in
/// memory. A write returns once it is durable (`acks=all`) and this node's copy has it; other
/// nodes see it when their follower reaches it, within milliseconds.
pub struct KafkaState {
    topic: CompactedTopic,
    entries: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KafkaState {
    /// Follows (creating it if needed) the state topic and loads every entry.
    pub async fn open(config: &KafkaConfig) -> Result<KafkaState, LogError> {
        let entries: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let follower_entries = Arc::clone(&entries);
        let topic = CompactedTopic::open(config, &config.state_topic(), move |key, value| {
            // Keys are written as UTF-8 by `put`; anything else is not ours.
            let Ok(key) = std::str::from_utf8(key) else { return };
            let mut entries = lock(&follower_entries);
            match value {
                Some(value) => entries.insert(key.to_owned(), value.to_vec()),
                None => entries.remove(key),
            };
        })
        .await?;
        Ok(KafkaState { topic, entries })
    }
}

#[async_trait]
impl StateStore for KafkaState {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        Ok(lock(&self.entries).get(key).cloned())
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), LogError> {
        self.topic.put(key.as_bytes(), value).await
    }

    async fn remove(&self, key: &str) -> Result<(), LogError> {
        if lock(&self.entries).contains_key(key) {
            self.topic.delete(key.as_bytes()).await?;
        }
        Ok(())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let entries = lock(&self.entries);
        Ok(entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }
}
