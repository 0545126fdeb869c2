//! A key every node of a cluster shares without being given one: the first of the candidates
//! the nodes offered in the compacted topic `{prefix}keys`. Compaction never removes a record
//! whose key is unique, and keeps the order of those it keeps, so every node, now or later,
//! reads the same record first.

use std::sync::{Arc, Mutex, PoisonError};

use switchyard_log::LogError;

use super::CompactedTopic;
use crate::config::KafkaConfig;

/// The record keys of the candidates for the key named `name`.
fn candidate_prefix(name: &str) -> String {
    format!("{name}/")
}

/// The cluster's key named `name`: the first candidate any node offered, this node's
/// `candidate` when there was none.
pub async fn shared_key(config: &KafkaConfig, name: &str, candidate: &[u8]) -> Result<Vec<u8>, LogError> {
    let prefix = candidate_prefix(name);
    let first: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let seen = Arc::clone(&first);
    let followed = prefix.clone().into_bytes();
    let topic = CompactedTopic::open(config, &config.keys_topic(), move |key, value| {
        if let (true, Some(value)) = (key.starts_with(&followed), value) {
            seen.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(|| value.to_vec());
        }
    })
    .await?;
    let offered = first.lock().unwrap_or_else(PoisonError::into_inner).is_some();
    if !offered {
        // Written under a key of its own, so no other node's offer is compacted away; a write
        // returns once the follower has read it, by then the first offer, this one or another's.
        topic.put(format!("{prefix}{:016x}", fastrand::u64(..)).as_bytes(), candidate).await?;
    }
    let agreed = first.lock().unwrap_or_else(PoisonError::into_inner).clone();
    agreed.ok_or_else(|| LogError::Unavailable(format!("no key '{name}' in topic '{}'", topic.topic())))
}
