//! The state table ([`StateStore`]), a table `state` (key → value) in the same redb database as
//! the group positions and dead letters (`offsets.redb`). Every write commits with
//! [`Durability::Immediate`]: fsynced before it returns.

use std::ops::Bound;

use async_trait::async_trait;
use redb::{Database, Durability, TableDefinition};
use switchyard_log::{LogError, StateStore};

use crate::groups::{db_error, SharedDb};
use crate::{blocking, lock};

const STATE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("state");

/// The embedded [`StateStore`]. Closed with the log.
pub(crate) struct State {
    db: SharedDb,
}

impl State {
    /// Creates the table if needed, so that readers always find it.
    pub(crate) fn open(db: SharedDb) -> Result<State, LogError> {
        with_db(&db, |db| {
            let txn = db.begin_write().map_err(db_error)?;
            txn.open_table(STATE).map_err(db_error)?;
            txn.commit().map_err(db_error)
        })?;
        Ok(State { db })
    }

    async fn write(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), LogError> {
        let (db, key) = (SharedDb::clone(&self.db), key.to_owned());
        blocking(move || {
            with_db(&db, |db| {
                let mut txn = db.begin_write().map_err(db_error)?;
                txn.set_durability(Durability::Immediate);
                {
                    let mut table = txn.open_table(STATE).map_err(db_error)?;
                    match &value {
                        Some(value) => drop(table.insert(key.as_str(), value.as_slice()).map_err(db_error)?),
                        None => drop(table.remove(key.as_str()).map_err(db_error)?),
                    }
                }
                txn.commit().map_err(db_error)
            })
        })
        .await
    }
}

fn with_db<T>(db: &SharedDb, f: impl FnOnce(&Database) -> Result<T, LogError>) -> Result<T, LogError> {
    let guard = lock(db);
    f(guard.as_ref().ok_or(LogError::Closed)?)
}

#[async_trait]
impl StateStore for State {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        let (db, key) = (SharedDb::clone(&self.db), key.to_owned());
        blocking(move || {
            with_db(&db, |db| {
                let txn = db.begin_read().map_err(db_error)?;
                let table = txn.open_table(STATE).map_err(db_error)?;
                let value = table.get(key.as_str()).map_err(db_error)?;
                Ok(value.map(|v| v.value().to_vec()))
            })
        })
        .await
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), LogError> {
        self.write(key, Some(value.to_vec())).await
    }

    async fn remove(&self, key: &str) -> Result<(), LogError> {
        self.write(key, None).await
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let (db, prefix) = (SharedDb::clone(&self.db), prefix.to_owned());
        blocking(move || {
            with_db(&db, |db| {
                let txn = db.begin_read().map_err(db_error)?;
                let table = txn.open_table(STATE).map_err(db_error)?;
                let mut out = Vec::new();
                for item in table.range::<&str>((Bound::Included(prefix.as_str()), Bound::Unbounded)).map_err(db_error)? {
                    let (key, value) = item.map_err(db_error)?;
                    if !key.value().starts_with(prefix.as_str()) {
                        break;
                    }
                    out.push((key.value().to_owned(), value.value().to_vec()));
                }
                Ok(out)
            })
        })
        .await
    }
}
