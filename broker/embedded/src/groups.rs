//! Committed group positions, in a redb database.
//!
//! Commits are frequent (every few deliveries per trigger) and may be replayed after a crash
//! (at-least-once), so `commit` only updates memory; a flusher persists dirty positions in one
//! fsynced write transaction every ~100 ms (fsynced because redb reuses the pages of a
//! non-durable commit only after a durable one), and `flush` (shutdown) persists at once.
//! Creating and deleting groups are rare and must survive a crash, so they fsync.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use switchyard_log::LogError;

use crate::lock;

/// `"topic/group"` → next offset to read. Topic names cannot contain `/`, so the first `/`
/// separates them.
/// The page cache of `offsets.redb`: positions and dead letters need little of it.
const CACHE_BYTES: usize = 16 << 20;
const OFFSETS: TableDefinition<'_, &str, u64> = TableDefinition::new("offsets");

/// The database, shared with the dead-letter store (redb allows one handle per file). `None`
/// once closed. Held for the whole of every transaction, so write transactions are serialized.
pub(crate) type SharedDb = Arc<Mutex<Option<Database>>>;

pub(crate) fn db_error(e: impl std::fmt::Display) -> LogError {
    LogError::Io(std::io::Error::other(format!("offsets database: {e}")))
}

fn key(topic: &str, group: &str) -> String {
    format!("{topic}/{group}")
}

#[derive(Default)]
struct State {
    /// Every group's latest position, committed or not yet persisted.
    committed: HashMap<String, u64>,
    /// Keys whose position changed since the last persist.
    dirty: HashSet<String>,
    closed: bool,
}

/// The group store.
pub(crate) struct Groups {
    /// `None` once closed. Held for the whole of every write transaction, so writes are
    /// serialized: a flush cannot write back a group that a concurrent delete removed.
    db: SharedDb,
    state: Mutex<State>,
}

impl Groups {
    /// Opens (or creates) the database and loads every position.
    pub(crate) fn open(path: &Path) -> Result<Groups, LogError> {
        // redb's default page cache is 1 GiB.
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        let mut committed = HashMap::new();
        {
            let table = txn.open_table(OFFSETS).map_err(db_error)?;
            for item in table.iter().map_err(db_error)? {
                let (k, v) = item.map_err(db_error)?;
                committed.insert(k.value().to_owned(), v.value());
            }
        }
        txn.commit().map_err(db_error)?;
        Ok(Groups { db: Arc::new(Mutex::new(Some(db))), state: Mutex::new(State { committed, ..State::default() }) })
    }

    /// The database handle, for the other stores kept in it (closed with the groups).
    pub(crate) fn database(&self) -> SharedDb {
        Arc::clone(&self.db)
    }

    /// The position of a group, if it exists.
    pub(crate) fn get(&self, topic: &str, group: &str) -> Option<u64> {
        lock(&self.state).committed.get(&key(topic, group)).copied()
    }

    /// The groups of `topic` with their positions.
    pub(crate) fn of_topic(&self, topic: &str) -> Vec<(String, u64)> {
        let prefix = format!("{topic}/");
        let state = lock(&self.state);
        let groups = state
            .committed
            .iter()
            .filter_map(|(key, &position)| key.strip_prefix(&prefix).map(|group| (group.to_owned(), position)));
        groups.collect()
    }

    /// Creates a group at `end` unless it exists; durable on return.
    pub(crate) fn create(&self, topic: &str, group: &str, end: u64) -> Result<(), LogError> {
        let key = key(topic, group);
        let db = lock(&self.db);
        let db = db.as_ref().ok_or(LogError::Closed)?;
        if lock(&self.state).committed.contains_key(&key) {
            return Ok(());
        }
        let mut txn = db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::Immediate);
        let position = {
            let mut table = txn.open_table(OFFSETS).map_err(db_error)?;
            let existing = table.get(key.as_str()).map_err(db_error)?.map(|v| v.value());
            match existing {
                Some(position) => position,
                None => {
                    table.insert(key.as_str(), end).map_err(db_error)?;
                    end
                }
            }
        };
        txn.commit().map_err(db_error)?;
        lock(&self.state).committed.insert(key, position);
        Ok(())
    }

    /// Records a commit in memory.
    pub(crate) fn commit(&self, topic: &str, group: &str, next_offset: u64) -> Result<(), LogError> {
        let key = key(topic, group);
        let mut state = lock(&self.state);
        if state.closed {
            return Err(LogError::Closed);
        }
        match state.committed.get_mut(&key) {
            Some(position) => *position = next_offset,
            None => return Err(LogError::UnknownGroup { topic: topic.to_owned(), group: group.to_owned() }),
        }
        state.dirty.insert(key);
        Ok(())
    }

    /// Persists dirty positions in one fsynced transaction. `durable`: also when nothing is
    /// dirty, and an error when the log is closed (shutdown's flush must know it happened).
    pub(crate) fn persist(&self, durable: bool) -> Result<(), LogError> {
        let db = lock(&self.db);
        let Some(db) = db.as_ref() else {
            return if durable { Err(LogError::Closed) } else { Ok(()) };
        };
        let pending: Vec<(String, u64)> = {
            let mut state = lock(&self.state);
            let dirty = std::mem::take(&mut state.dirty);
            dirty.into_iter().filter_map(|k| state.committed.get(&k).map(|&v| (k, v))).collect()
        };
        if pending.is_empty() && !durable {
            return Ok(());
        }
        let result = (|| {
            let mut txn = db.begin_write().map_err(db_error)?;
            // Durable even for routine flushes (at most ten fsyncs a second): redb reuses the
            // pages a non-durable commit frees only after a later durable one, so a stream of
            // them would grow the file.
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(OFFSETS).map_err(db_error)?;
                for (k, v) in &pending {
                    table.insert(k.as_str(), *v).map_err(db_error)?;
                }
            }
            txn.commit().map_err(db_error)
        })();
        if result.is_err() {
            // Keep them dirty so that the next persist tries again.
            let mut state = lock(&self.state);
            state.dirty.extend(pending.into_iter().map(|(k, _)| k));
        }
        result
    }

    /// Deletes a group; durable on return.
    pub(crate) fn delete(&self, topic: &str, group: &str) -> Result<(), LogError> {
        self.delete_keys(vec![key(topic, group)])
    }

    /// Deletes every group of a topic; durable on return.
    pub(crate) fn delete_topic(&self, topic: &str) -> Result<(), LogError> {
        let prefix = format!("{topic}/");
        let db = lock(&self.db);
        let db = db.as_ref().ok_or(LogError::Closed)?;
        // Collect from the database, not memory, so orphans left by a crash go too.
        let mut keys: Vec<String> = Vec::new();
        {
            let txn = db.begin_read().map_err(db_error)?;
            let table = txn.open_table(OFFSETS).map_err(db_error)?;
            for item in table.range(prefix.as_str()..).map_err(db_error)? {
                let (k, _) = item.map_err(db_error)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                keys.push(k.value().to_owned());
            }
        }
        keys.extend(lock(&self.state).committed.keys().filter(|k| k.starts_with(&prefix)).cloned());
        Self::remove(db, &self.state, keys)
    }

    fn delete_keys(&self, keys: Vec<String>) -> Result<(), LogError> {
        let db = lock(&self.db);
        let db = db.as_ref().ok_or(LogError::Closed)?;
        Self::remove(db, &self.state, keys)
    }

    fn remove(db: &Database, state: &Mutex<State>, keys: Vec<String>) -> Result<(), LogError> {
        {
            let mut state = lock(state);
            for k in &keys {
                state.committed.remove(k);
                state.dirty.remove(k);
            }
        }
        let mut txn = db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut table = txn.open_table(OFFSETS).map_err(db_error)?;
            for k in &keys {
                table.remove(k.as_str()).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    /// Topics that have groups (to find orphans on open).
    pub(crate) fn topics(&self) -> HashSet<String> {
        lock(&self.state).committed.keys().filter_map(|k| k.split_once('/').map(|(t, _)| t.to_owned())).collect()
    }

    /// Persists durably and closes the database, so that the directory can be reopened.
    pub(crate) fn close(&self) -> Result<(), LogError> {
        let result = self.persist(true);
        lock(&self.state).closed = true;
        lock(&self.db).take();
        result
    }
}
