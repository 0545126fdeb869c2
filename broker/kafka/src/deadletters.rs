//! The dead-letter store on Kafka: one compacted topic, `{prefix}deadletters`, materialised in
//! memory on every node.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchyard_event::{json, storage, Event};
use switchyard_log::{DeadLetter, DeadLetterStore, LogError};

use crate::client::now_ms;
use crate::cluster::CompactedTopic;
use crate::config::KafkaConfig;

/// The dead-letter store on Kafka.
///
/// Entries live in one compacted topic, `{prefix}deadletters`, keyed by `["scope","id"]` (JSON,
/// so that no scope can pass for another); the value is JSON: the event in the CloudEvents JSON
/// format plus `reason`, `attempts`, `last_status`, `last_error` and `dead_lettered_at`.
/// Removing an entry writes a tombstone, which compaction turns into the key's disappearance.
///
/// Every node follows the topic from the beginning ([`CompactedTopic`]) and keeps **every entry
/// in memory**, event data included: the store costs each node about the size of the events it
/// holds plus a few hundred bytes per entry, and reading it at start takes as long as reading
/// the topic. That suits a dead-letter store, which should stay small (it is redriven or purged);
/// one that grows to gigabytes needs an indexed store instead.
///
/// `put` returns once the entry is durable (`acks=all`) and this node's copy holds it, so a
/// `list` or `get` on the same node sees it at once; other nodes see it when their follower
/// reaches it, typically within milliseconds.
///
/// Ids are `{unix_ms:013}-{node}-{seq:06}`: they sort by time, and on one node by order of
/// `put`; a node never assigns an id at or below the greatest it has seen in the topic
/// (removed entries included, while their tombstones last), so within a scope ids grow across
/// nodes too, up to puts that race on two nodes within the same moment.
pub struct KafkaDeadLetters {
    topic: CompactedTopic,
    entries: Arc<Mutex<Entries>>,
    /// This node's part of every id it assigns.
    node: String,
    /// The time part and sequence of the last id this node assigned.
    clock: Mutex<(u64, u32)>,
}

/// The materialised topic.
#[derive(Default)]
struct Entries {
    scopes: HashMap<String, BTreeMap<String, DeadLetter>>,
    /// The greatest id seen in the topic, tombstones included.
    greatest_id: String,
}

/// The value of an entry's record.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    /// The event in the CloudEvents JSON format.
    #[serde(borrow)]
    event: &'a RawValue,
    reason: String,
    attempts: u32,
    last_status: Option<u16>,
    last_error: Option<String>,
    dead_lettered_at: String,
    /// The event in the storage codec, base64, present only when the JSON format cannot carry
    /// the event exactly (such as whitespace around a JSON payload, or a payload marked JSON
    /// that is not): a redriven event must be the one that failed, byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
}

fn lock(entries: &Mutex<Entries>) -> MutexGuard<'_, Entries> {
    entries.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(scope: &str, id: &str) -> Vec<u8> {
    serde_json::to_vec(&(scope, id)).unwrap_or_default()
}

fn encode(entry: &DeadLetter) -> Result<Vec<u8>, LogError> {
    let event_json = json::encode_event(&entry.event);
    let exact_in_json = json::decode_event(&event_json).is_ok_and(|decoded| decoded == entry.event);
    let event_json = String::from_utf8(event_json).map_err(|e| {
        LogError::Unavailable(format!("the JSON form of event '{}' is not utf-8: {e}", entry.event.id()))
    })?;
    let event = RawValue::from_string(event_json)
        .map_err(|e| LogError::Unavailable(format!("the JSON form of event '{}' is invalid: {e}", entry.event.id())))?;
    let stored = Stored {
        event: &event,
        reason: entry.reason.clone(),
        attempts: entry.attempts,
        last_status: entry.last_status,
        last_error: entry.last_error.clone(),
        dead_lettered_at: entry.dead_lettered_at.clone(),
        exact: match exact_in_json {
            true => None,
            false => Some(
                STANDARD
                    .encode(storage::encode(&entry.event).map_err(|e| {
                        LogError::Unavailable(format!("cannot encode the event of a dead letter: {e}"))
                    })?),
            ),
        },
    };
    serde_json::to_vec(&stored).map_err(|e| LogError::Unavailable(format!("cannot encode a dead letter: {e}")))
}

fn decode(id: &str, value: &[u8]) -> Result<DeadLetter, String> {
    let stored: Stored<'_> = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    let event: Event = match &stored.exact {
        Some(record) => {
            let bytes = STANDARD.decode(record).map_err(|e| format!("exact form: {e}"))?;
            storage::decode(&Bytes::from(bytes)).map_err(|e| format!("exact form: {e}"))?
        }
        None => json::decode_event(stored.event.get().as_bytes()).map_err(|e| format!("event: {e}"))?,
    };
    Ok(DeadLetter {
        id: id.to_owned(),
        event,
        reason: stored.reason,
        attempts: stored.attempts,
        last_status: stored.last_status,
        last_error: stored.last_error,
        dead_lettered_at: stored.dead_lettered_at,
    })
}

impl Entries {
    /// A change read from the topic.
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok((scope, id)) = serde_json::from_slice::<(String, String)>(key) else {
            tracing::warn!(key = %String::from_utf8_lossy(key), "dead-letter record with a key that is not [scope, id]; skipped");
            return;
        };
        if id > self.greatest_id {
            self.greatest_id.clone_from(&id);
        }
        match value {
            None => {
                if let Some(scope_entries) = self.scopes.get_mut(&scope) {
                    scope_entries.remove(&id);
                    if scope_entries.is_empty() {
                        self.scopes.remove(&scope);
                    }
                }
            }
            Some(value) => match decode(&id, value) {
                Ok(entry) => {
                    self.scopes.entry(scope).or_default().insert(id, entry);
                }
                Err(error) => tracing::error!(%scope, %id, %error, "undecodable dead letter; skipped"),
            },
        }
    }
}

impl KafkaDeadLetters {
    /// Follows (creating it if needed) the dead-letter topic and loads every entry.
    pub async fn open(config: &KafkaConfig) -> Result<KafkaDeadLetters, LogError> {
        let entries = Arc::new(Mutex::new(Entries::default()));
        let follower_entries = Arc::clone(&entries);
        let topic = CompactedTopic::open(config, &config.dead_letter_topic(), move |key, value| {
            lock(&follower_entries).apply(key, value);
        })
        .await?;
        Ok(KafkaDeadLetters { topic, entries, node: format!("{:08x}", fastrand::u32(..)), clock: Mutex::new((0, 0)) })
    }

    /// The next id: later than this node's previous one and than any id seen in the topic.
    fn next_id(&self) -> String {
        let greatest = lock(&self.entries).greatest_id.clone();
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let (last_ms, last_seq) = *clock;
        let now = now_ms();
        let (mut ms, mut seq) = if now > last_ms { (now, 0) } else { (last_ms, last_seq + 1) };
        if seq > 999_999 {
            (ms, seq) = (ms + 1, 0);
        }
        let format = |ms: u64, seq: u32| format!("{ms:013}-{}-{seq:06}", self.node);
        let mut id = format(ms, seq);
        if id <= greatest {
            // Another node (or this one before a restart) got further: go past it. Only ids of
            // this shape carry a time to go past.
            if let Some(seen_ms) = greatest.get(..13).and_then(|digits| digits.parse::<u64>().ok()) {
                (ms, seq) = (seen_ms.max(ms) + 1, 0);
                id = format(ms, seq);
            }
        }
        *clock = (ms, seq);
        id
    }
}

#[async_trait]
impl DeadLetterStore for KafkaDeadLetters {
    async fn put(&self, scope: &str, entry: DeadLetter) -> Result<String, LogError> {
        let value = encode(&entry)?;
        let id = self.next_id();
        self.topic.put(&key(scope, &id), &value).await?;
        Ok(id)
    }

    async fn list(&self, scope: &str, after: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        let entries = lock(&self.entries);
        let Some(scope_entries) = entries.scopes.get(scope) else { return Ok(Vec::new()) };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(scope_entries.range::<str, _>((from, Bound::Unbounded)).take(limit).map(|(_, e)| e.clone()).collect())
    }

    async fn get(&self, scope: &str, id: &str) -> Result<Option<DeadLetter>, LogError> {
        Ok(lock(&self.entries).scopes.get(scope).and_then(|entries| entries.get(id)).cloned())
    }

    async fn remove(&self, scope: &str, id: &str) -> Result<bool, LogError> {
        let exists = lock(&self.entries).scopes.get(scope).is_some_and(|entries| entries.contains_key(id));
        if exists {
            self.topic.delete(&key(scope, id)).await?;
        }
        Ok(exists)
    }

    async fn purge(&self, scope: &str) -> Result<u64, LogError> {
        let keys: Vec<Vec<u8>> = lock(&self.entries)
            .scopes
            .get(scope)
            .map(|entries| entries.keys().map(|id| key(scope, id)).collect())
            .unwrap_or_default();
        let changes: Vec<(&[u8], Option<&[u8]>)> = keys.iter().map(|k| (k.as_slice(), None)).collect();
        if !changes.is_empty() {
            self.topic.write(&changes).await?;
        }
        Ok(keys.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_event::{AttrValue, Data, DataForm};

    fn entry(data: Data) -> DeadLetter {
        let attributes = vec![
            ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
            ("id".to_owned(), AttrValue::String("e-1".to_owned())),
            ("source".to_owned(), AttrValue::String("/s".to_owned())),
            ("type".to_owned(), AttrValue::String("t".to_owned())),
            ("datacontenttype".to_owned(), AttrValue::String("application/json".to_owned())),
            ("n".to_owned(), AttrValue::Integer(-1)),
        ];
        DeadLetter {
            id: "x".to_owned(),
            event: Event::new(attributes, Some(data)).unwrap(),
            reason: "retries exhausted".to_owned(),
            attempts: 4,
            last_status: Some(503),
            last_error: None,
            dead_lettered_at: "2024-05-01T12:00:00Z".to_owned(),
        }
    }

    #[test]
    fn entries_roundtrip_exactly_and_stay_readable_json() {
        let plain = entry(Data { form: DataForm::Json, bytes: Bytes::from_static(b"{\"a\": [1, 2]}") });
        let value = encode(&plain).unwrap();
        let text = std::str::from_utf8(&value).unwrap();
        assert!(text.starts_with(r#"{"event":{"specversion":"1.0","id":"e-1""#), "{text}");
        assert!(!text.contains("\"exact\""), "{text}");
        assert_eq!(decode("x", &value).unwrap(), plain);

        // A trailing newline after a JSON payload does not survive the JSON format: the exact
        // form comes along.
        let newline = entry(Data { form: DataForm::Json, bytes: Bytes::from_static(b"{\"a\": 1}\n") });
        let value = encode(&newline).unwrap();
        assert!(std::str::from_utf8(&value).unwrap().contains("\"exact\""));
        assert_eq!(decode("x", &value).unwrap(), newline);
    }

    #[test]
    fn keys_keep_scopes_apart_and_bad_records_are_skipped() {
        let mut entries = Entries::default();
        let value = encode(&entry(Data { form: DataForm::Binary, bytes: Bytes::from_static(b"\x00") })).unwrap();
        entries.apply(&key("a/b", "1"), Some(&value));
        entries.apply(&key("a", "b/1"), Some(&value));
        entries.apply(b"not json", Some(&value));
        entries.apply(&key("a", "2"), Some(b"{}"));
        assert_eq!(entries.scopes["a/b"].keys().collect::<Vec<_>>(), ["1"]);
        assert_eq!(entries.scopes["a"].keys().collect::<Vec<_>>(), ["b/1"]);
        entries.apply(&key("a/b", "1"), None);
        assert!(!entries.scopes.contains_key("a/b"));
        assert_eq!(entries.greatest_id, "b/1");
    }
}
