//! Brokers and triggers in a redb database in the data directory. Every write is one
//! transaction, fsynced before it returns, so an acknowledged PUT survives a crash.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::StoreError;
use crate::resources::{Broker, Kind, Resource, Trigger};

const BROKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("brokers");
const TRIGGERS: TableDefinition<&str, &[u8]> = TableDefinition::new("triggers");

/// The metadata store.
pub struct Store {
    db: Database,
}

/// The result of a create-or-replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// The resource did not exist.
    Created,
    /// The resource existed and was replaced.
    Replaced,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // Declarations are small; redb's default 1 GiB page cache is far more than they need.
        let db = Database::builder().set_cache_size(16 << 20).create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(BROKERS)?;
        tx.open_table(TRIGGERS)?;
        tx.commit()?;
        Ok(Store { db })
    }

    /// Creates or replaces a broker, filling in the server-set metadata.
    pub fn put_broker(&self, broker: Broker) -> Result<(Broker, Upsert), StoreError> {
        self.put(Kind::Broker, broker)
    }

    /// Creates or replaces a trigger, filling in the server-set metadata.
    pub fn put_trigger(&self, trigger: Trigger) -> Result<(Trigger, Upsert), StoreError> {
        self.put(Kind::Trigger, trigger)
    }

    /// A broker.
    pub fn get_broker(&self, namespace: &str, name: &str) -> Result<Option<Broker>, StoreError> {
        self.get(Kind::Broker, &key(namespace, name))
    }

    /// A trigger.
    pub fn get_trigger(&self, namespace: &str, name: &str) -> Result<Option<Trigger>, StoreError> {
        self.get(Kind::Trigger, &key(namespace, name))
    }

    /// Brokers in a namespace, or in all namespaces, sorted by namespace and name.
    pub fn list_brokers(&self, namespace: Option<&str>) -> Result<Vec<Broker>, StoreError> {
        self.list(Kind::Broker, namespace)
    }

    /// Triggers in a namespace, or in all namespaces, sorted by namespace and name.
    pub fn list_triggers(&self, namespace: Option<&str>) -> Result<Vec<Trigger>, StoreError> {
        self.list(Kind::Trigger, namespace)
    }

    /// Deletes a broker; returns whether it existed.
    pub fn delete_broker(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        self.delete(Kind::Broker, &key(namespace, name))
    }

    /// Deletes a trigger; returns whether it existed.
    pub fn delete_trigger(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        self.delete(Kind::Trigger, &key(namespace, name))
    }

    fn put<S: Serialize + DeserializeOwned + PartialEq>(
        &self,
        kind: Kind,
        mut resource: Resource<S>,
    ) -> Result<(Resource<S>, Upsert), StoreError> {
        let namespace = resource.metadata.namespace.clone().unwrap_or_default();
        let name = resource.metadata.name.clone().unwrap_or_default();
        let key = key(&namespace, &name);
        let tx = self.db.begin_write()?;
        let upsert = {
            let mut table = tx.open_table(table(kind))?;
            let existing: Option<Resource<S>> = match table.get(key.as_str())? {
                Some(bytes) => Some(decode(&key, bytes.value())?),
                None => None,
            };
            let upsert = match existing {
                Some(existing) => {
                    let generation = existing.metadata.generation.unwrap_or(1);
                    resource.metadata.uid = existing.metadata.uid;
                    resource.metadata.creation_timestamp = existing.metadata.creation_timestamp;
                    resource.metadata.generation =
                        Some(if existing.spec == resource.spec { generation } else { generation + 1 });
                    Upsert::Replaced
                }
                None => {
                    resource.metadata.uid = Some(new_uid());
                    resource.metadata.creation_timestamp = Some(now_rfc3339());
                    resource.metadata.generation = Some(1);
                    Upsert::Created
                }
            };
            resource.status = serde_json::Value::Null;
            let bytes = serde_json::to_vec(&resource).map_err(|e| StoreError::Database(e.to_string()))?;
            table.insert(key.as_str(), bytes.as_slice())?;
            upsert
        };
        tx.commit()?;
        Ok((resource, upsert))
    }

    fn get<S: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<Resource<S>>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(table(kind))?;
        let value = table.get(key)?;
        value.map(|bytes| decode(key, bytes.value())).transpose()
    }

    fn list<S: DeserializeOwned>(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<Resource<S>>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(table(kind))?;
        let mut items = Vec::new();
        let prefix = namespace.map(|ns| format!("{ns}/"));
        for entry in table.iter()? {
            let (key, value) = entry?;
            if prefix.as_deref().is_some_and(|p| !key.value().starts_with(p)) {
                continue;
            }
            items.push(decode(key.value(), value.value())?);
        }
        Ok(items)
    }

    fn delete(&self, kind: Kind, key: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = tx.open_table(table(kind))?.remove(key)?.is_some();
        tx.commit()?;
        Ok(existed)
    }
}

fn table(kind: Kind) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match kind {
        Kind::Broker => BROKERS,
        Kind::Trigger => TRIGGERS,
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn decode<S: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<Resource<S>, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.to_owned(), message: e.to_string() })
}

/// RFC 3339 UTC timestamp of now, second precision (Kubernetes style).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn new_uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u128;
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) as u128;
    let bits = nanos ^ (count << 96) ^ (u128::from(std::process::id()) << 64);
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{parse_broker, parse_trigger};

    #[test]
    fn put_get_list_delete_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = Store::open(&path).unwrap();
            let b = parse_broker("ns1", "b", b"{}").unwrap();
            let (stored, upsert) = store.put_broker(b.clone()).unwrap();
            assert_eq!(upsert, Upsert::Created);
            assert_eq!(stored.metadata.generation, Some(1));
            let (again, upsert) = store.put_broker(b).unwrap();
            assert_eq!(upsert, Upsert::Replaced);
            assert_eq!(again.metadata.uid, stored.metadata.uid);
            assert_eq!(again.metadata.generation, Some(1));
            let t = parse_trigger("ns1", "t", br#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"}}}"#).unwrap();
            store.put_trigger(t).unwrap();
            let t2 = parse_trigger("ns2", "t", br#"{"spec":{"broker":"b","subscriber":{"uri":"http://y/"}}}"#).unwrap();
            store.put_trigger(t2).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(store.get_broker("ns1", "b").unwrap().is_some());
        assert_eq!(store.list_triggers(Some("ns1")).unwrap().len(), 1);
        assert_eq!(store.list_triggers(None).unwrap().len(), 2);
        let t = parse_trigger("ns1", "t", br#"{"spec":{"broker":"b","subscriber":{"uri":"http://z/"}}}"#).unwrap();
        let (t, _) = store.put_trigger(t).unwrap();
        assert_eq!(t.metadata.generation, Some(2));
        assert!(store.delete_trigger("ns1", "t").unwrap());
        assert!(!store.delete_trigger("ns1", "t").unwrap());
        assert!(store.get_trigger("ns1", "t").unwrap().is_none());
    }
}
