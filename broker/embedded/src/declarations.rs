//! The declaration log of a single node ([`DeclarationLog`]): one redb table `declarations`
//! (key → the resource as stored) in `meta.redb`, beside the data directory's log.
//!
//! A single node is its own cluster: a change is durable (fsynced) once its transaction
//! commits, and is then handed to this node's applier at once, in order — the same path a
//! cluster's nodes follow from a shared log, applied synchronously. At open, every stored
//! declaration is replayed first.
//!
//! Data directories written before this table existed kept brokers, triggers and sources in
//! three tables of the same file (`brokers`, `triggers` keyed `namespace/name`; `sources` keyed
//! `Kind/namespace/name`); they are moved into `declarations` once, at open, in one
//! transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition, TableHandle};
use switchyard_log::{Change, Changes, DeclarationLog, LogError};
use tokio::sync::mpsc;

use crate::lock;

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const DECLARATIONS: Table = TableDefinition::new("declarations");
/// The tables of earlier versions, and the key prefix each one's entries get.
const LEGACY: [(Table, Option<&str>); 3] = [
    (TableDefinition::new("brokers"), Some("broker")),
    (TableDefinition::new("triggers"), Some("trigger")),
    // Keyed `Kind/namespace/name` already: only the kind is lower-cased.
    (TableDefinition::new("sources"), None),
];

/// The declarations of a single node, in `meta.redb`.
pub struct LocalDeclarations {
    db: Arc<Database>,
    /// The next sequence number; held while a change commits, so that changes reach the
    /// applier in the order they became durable.
    next: tokio::sync::Mutex<u64>,
    sender: mpsc::UnboundedSender<Change>,
    changes: Mutex<Option<Changes>>,
}

fn db_error(error: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("declaration store: {error}"))
}

impl LocalDeclarations {
    /// Opens (or creates) the store at `path` and queues every stored declaration for replay.
    pub fn open(path: &Path) -> Result<LocalDeclarations, LogError> {
        // Declarations are small; redb's default 1 GiB page cache is far more than they need.
        let db = Database::builder().set_cache_size(16 << 20).create(path).map_err(db_error)?;
        let stored = migrate_and_load(&db)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let replayed = stored.len() as u64;
        for (sequence, (key, value)) in (0..).zip(stored) {
            // The receiver is still ours: sending cannot fail.
            let _ = sender.send(Change { sequence, key, value: Some(value) });
        }
        Ok(LocalDeclarations {
            db: Arc::new(db),
            next: tokio::sync::Mutex::new(replayed),
            sender,
            changes: Mutex::new(Some(Changes { receiver, replayed })),
        })
    }
}

/// Moves declarations of earlier versions into the `declarations` table, then reads it all.
fn migrate_and_load(db: &Database) -> Result<Vec<(String, Vec<u8>)>, LogError> {
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut table = txn.open_table(DECLARATIONS).map_err(db_error)?;
        let existing: Vec<String> =
            txn.list_tables().map_err(db_error)?.map(|handle| handle.name().to_owned()).collect();
        for (legacy, prefix) in LEGACY {
            if !existing.iter().any(|name| name == legacy.name()) {
                continue;
            }
            let entries: Vec<(String, Vec<u8>)> = {
                let old = txn.open_table(legacy).map_err(db_error)?;
                let mut entries = Vec::new();
                for item in old.iter().map_err(db_error)? {
                    let (key, value) = item.map_err(db_error)?;
                    entries.push((key.value().to_owned(), value.value().to_vec()));
                }
                entries
            };
            for (key, value) in entries {
                let key = match prefix {
                    Some(prefix) => format!("{prefix}/{key}"),
                    None => match key.split_once('/') {
                        Some((kind, rest)) => format!("{}/{rest}", kind.to_ascii_lowercase()),
                        None => continue,
                    },
                };
                table.insert(key.as_str(), value.as_slice()).map_err(db_error)?;
            }
            txn.delete_table(legacy).map_err(db_error)?;
        }
    }
    txn.commit().map_err(db_error)?;
    let txn = db.begin_read().map_err(db_error)?;
    let table = txn.open_table(DECLARATIONS).map_err(db_error)?;
    let mut stored = Vec::new();
    for item in table.iter().map_err(db_error)? {
        let (key, value) = item.map_err(db_error)?;
        stored.push((key.value().to_owned(), value.value().to_vec()));
    }
    Ok(stored)
}

#[async_trait]
impl DeclarationLog for LocalDeclarations {
    async fn publish(&self, key: &str, value: Option<Vec<u8>>) -> Result<u64, LogError> {
        let mut next = self.next.lock().await;
        let db = Arc::clone(&self.db);
        let (owned_key, owned_value) = (key.to_owned(), value.clone());
        // A commit fsyncs: off the async workers.
        tokio::task::spawn_blocking(move || -> Result<(), LogError> {
            let txn = db.begin_write().map_err(db_error)?;
            {
                let mut table = txn.open_table(DECLARATIONS).map_err(db_error)?;
                match &owned_value {
                    Some(value) => drop(table.insert(owned_key.as_str(), value.as_slice()).map_err(db_error)?),
                    None => drop(table.remove(owned_key.as_str()).map_err(db_error)?),
                }
            }
            txn.commit().map_err(db_error)
        })
        .await
        .map_err(|e| LogError::Unavailable(format!("declaration store: {e}")))??;
        let sequence = *next;
        *next += 1;
        // Durable now; the applier may be gone (shutting down), which changes nothing stored.
        let _ = self.sender.send(Change { sequence, key: key.to_owned(), value });
        Ok(sequence)
    }

    fn changes(&self) -> Result<Changes, LogError> {
        lock(&self.changes)
            .take()
            .ok_or_else(|| LogError::Unavailable("the declaration changes were already taken".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(changes: &mut Changes, n: usize) -> Vec<Change> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(changes.receiver.recv().await.expect("a change"));
        }
        out
    }

    #[tokio::test]
    async fn changes_are_durable_replayed_in_key_order_and_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let declarations = LocalDeclarations::open(&path).unwrap();
            let mut changes = declarations.changes().unwrap();
            assert_eq!(changes.replayed, 0);
            assert!(declarations.changes().is_err(), "handed out once");
            assert_eq!(declarations.publish("trigger/ns/t", Some(b"t".to_vec())).await.unwrap(), 0);
            assert_eq!(declarations.publish("broker/ns/b", Some(b"b1".to_vec())).await.unwrap(), 1);
            assert_eq!(declarations.publish("broker/ns/b", Some(b"b2".to_vec())).await.unwrap(), 2);
            assert_eq!(declarations.publish("broker/ns/gone", Some(b"x".to_vec())).await.unwrap(), 3);
            assert_eq!(declarations.publish("broker/ns/gone", None).await.unwrap(), 4);
            let seen = drain(&mut changes, 5).await;
            assert_eq!(seen.iter().map(|c| c.sequence).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
            assert_eq!(seen[4], Change { sequence: 4, key: "broker/ns/gone".into(), value: None });
        }
        let declarations = LocalDeclarations::open(&path).unwrap();
        let mut changes = declarations.changes().unwrap();
        assert_eq!(changes.replayed, 2);
        let replay = drain(&mut changes, 2).await;
        assert_eq!(
            replay,
            [
                Change { sequence: 0, key: "broker/ns/b".into(), value: Some(b"b2".to_vec()) },
                Change { sequence: 1, key: "trigger/ns/t".into(), value: Some(b"t".to_vec()) },
            ]
        );
        assert_eq!(declarations.publish("trigger/ns/u", Some(b"u".to_vec())).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn declarations_of_earlier_versions_are_moved_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(LEGACY[0].0).unwrap().insert("ns/b", b"broker".as_slice()).unwrap();
            txn.open_table(LEGACY[1].0).unwrap().insert("ns/t", b"trigger".as_slice()).unwrap();
            txn.open_table(LEGACY[2].0).unwrap().insert("PingSource/ns/p", b"ping".as_slice()).unwrap();
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let declarations = LocalDeclarations::open(&path).unwrap();
            let mut changes = declarations.changes().unwrap();
            let keys: Vec<String> = drain(&mut changes, 3).await.into_iter().map(|c| c.key).collect();
            assert_eq!(keys, ["broker/ns/b", "pingsource/ns/p", "trigger/ns/t"]);
            assert_eq!(changes.replayed, 3);
        }
    }
}
