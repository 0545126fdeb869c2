//! The state table ([`StateStore`]), a table `state` (key → value) in the same redb database as
//! the group positions and dead letters (`offsets.redb`), with the whole table also in memory.
//!
//! - **Reads** come from memory, loaded at open: the table is small by design (a source's
//!   progress, the delivery ids of the last days), and a webhook source reads it on every
//!   delivery.
//! - **Group commit**: every write is fsynced before it returns ([`Durability::Immediate`]), and
//!   the writes that arrive while one transaction commits go together into the next one, so
//!   many deliveries at once share an fsync instead of each waiting for its own. Memory
//!   changes only once a commit succeeded.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use redb::{Durability, ReadableTable, TableDefinition};
use switchyard_log::{LogError, StateStore};
use tokio::sync::oneshot;

use crate::groups::{db_error, SharedDb};
use crate::{lock, read_lock, write_lock};

const STATE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("state");

/// A write waiting for the next commit: the key, its value (`None` removes it), and who waits.
type Write = (String, Option<Vec<u8>>, oneshot::Sender<Result<(), String>>);

#[derive(Default)]
struct Pending {
    writes: Vec<Write>,
    /// A committer is running: it takes every write queued before it finds the queue empty.
    committing: bool,
}

/// What the store and its committer share.
struct Shared {
    db: SharedDb,
    /// The table as committed.
    entries: RwLock<BTreeMap<String, Vec<u8>>>,
    pending: Mutex<Pending>,
}

/// The embedded [`StateStore`]. Closed with the log.
pub(crate) struct State {
    shared: Arc<Shared>,
}

impl State {
    /// Creates the table if needed and loads it.
    pub(crate) fn open(db: SharedDb) -> Result<State, LogError> {
        let entries = {
            let guard = lock(&db);
            let db = guard.as_ref().ok_or(LogError::Closed)?;
            let txn = db.begin_write().map_err(db_error)?;
            let mut entries = BTreeMap::new();
            {
                let table = txn.open_table(STATE).map_err(db_error)?;
                for item in table.iter().map_err(db_error)? {
                    let (key, value) = item.map_err(db_error)?;
                    entries.insert(key.value().to_owned(), value.value().to_vec());
                }
            }
            txn.commit().map_err(db_error)?;
            entries
        };
        Ok(State {
            shared: Arc::new(Shared { db, entries: RwLock::new(entries), pending: Mutex::new(Pending::default()) }),
        })
    }

    /// Queues the write and returns once a commit holding it is durable. The first writer to
    /// find no committer running becomes it, on the blocking pool, until the queue is empty.
    async fn write(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), LogError> {
        let (done, committed) = oneshot::channel();
        let start = {
            let mut pending = lock(&self.shared.pending);
            pending.writes.push((key.to_owned(), value, done));
            !std::mem::replace(&mut pending.committing, true)
        };
        if start {
            let shared = Arc::clone(&self.shared);
            tokio::task::spawn_blocking(move || shared.commit_queued());
        }
        match committed.await {
            Ok(result) => result.map_err(|e| LogError::Io(std::io::Error::other(e))),
            Err(_) => Err(LogError::Closed),
        }
    }
}

impl Shared {
    /// Commits queued writes, a batch per transaction, until none are left.
    fn commit_queued(&self) {
        loop {
            let batch = {
                let mut pending = lock(&self.pending);
                if pending.writes.is_empty() {
                    pending.committing = false;
                    return;
                }
                std::mem::take(&mut pending.writes)
            };
            let result = self.commit(&batch).map_err(|e| e.to_string());
            for (_, _, done) in batch {
                let _ = done.send(result.clone());
            }
        }
    }

    /// One transaction, in queue order, so that the last write of a key wins as if they had
    /// been made one after the other; then memory.
    fn commit(&self, batch: &[Write]) -> Result<(), LogError> {
        let guard = lock(&self.db);
        let db = guard.as_ref().ok_or(LogError::Closed)?;
        let mut txn = db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut table = txn.open_table(STATE).map_err(db_error)?;
            for (key, value, _) in batch {
                match value {
                    Some(value) => drop(table.insert(key.as_str(), value.as_slice()).map_err(db_error)?),
                    None => drop(table.remove(key.as_str()).map_err(db_error)?),
                }
            }
        }
        txn.commit().map_err(db_error)?;
        let mut entries = write_lock(&self.entries);
        for (key, value, _) in batch {
            match value {
                Some(value) => entries.insert(key.clone(), value.clone()),
                None => entries.remove(key),
            };
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for State {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        Ok(read_lock(&self.shared.entries).get(key).cloned())
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), LogError> {
        self.write(key, Some(value.to_vec())).await
    }

    async fn remove(&self, key: &str) -> Result<(), LogError> {
        self.write(key, None).await
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let entries = read_lock(&self.shared.entries);
        Ok(entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }
}
