//! Brokers and triggers in a redb database in the data directory. Every write is one
//! transaction, fsynced before it returns, so an acknowledged PUT survives a crash.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::StoreError;
use crate::resources::{Broker, Kind, Resource, Trigger};

/// A source as stored: its spec is the sources crate's business, kept as JSON.
pub type Source = Resource<serde_json::Value>;

const BROKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("brokers");
const TRIGGERS: TableDefinition<&str, &[u8]> = TableDefinition::new("triggers");
/// Sources of every kind, keyed `Kind/namespace/name` (`PingSource/ns/p`).
const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");

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
        Store::init(Database::builder().set_cache_size(16 << 20).create(path)?)
    }

    /// A store in memory: for a node whose declarations live in a shared log and are replayed
    /// from it at every start.
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?)
    }

    fn init(db: Database) -> Result<Store, StoreError> {
        let tx = db.begin_write()?;
        tx.open_table(BROKERS)?;
        tx.open_table(TRIGGERS)?;
        tx.open_table(SOURCES)?;
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

    /// Creates or replaces a source of `kind`, filling in the server-set metadata.
    pub fn put_source(&self, kind: &'static str, source: Source) -> Result<(Source, Upsert), StoreError> {
        self.put(Kind::Source(kind), source)
    }

    /// The broker as `put_broker` would store it (server-set metadata filled in against the
    /// stored one), without storing it: for publishing to a shared log first.
    pub fn prepare_broker(&self, broker: Broker) -> Result<(Broker, Upsert), StoreError> {
        self.prepare(Kind::Broker, broker)
    }

    /// The trigger as `put_trigger` would store it, without storing it.
    pub fn prepare_trigger(&self, trigger: Trigger) -> Result<(Trigger, Upsert), StoreError> {
        self.prepare(Kind::Trigger, trigger)
    }

    /// The source as `put_source` would store it, without storing it.
    pub fn prepare_source(&self, kind: &'static str, source: Source) -> Result<(Source, Upsert), StoreError> {
        self.prepare(Kind::Source(kind), source)
    }

    /// Stores a broker exactly as given (prepared by `prepare_broker`, here or on another node).
    pub fn replace_broker(&self, broker: &Broker) -> Result<(), StoreError> {
        self.replace(Kind::Broker, broker)
    }

    /// Stores a trigger exactly as given.
    pub fn replace_trigger(&self, trigger: &Trigger) -> Result<(), StoreError> {
        self.replace(Kind::Trigger, trigger)
    }

    /// Stores a source of `kind` exactly as given.
    pub fn replace_source(&self, kind: &'static str, source: &Source) -> Result<(), StoreError> {
        self.replace(Kind::Source(kind), source)
    }

    /// A broker.
    pub fn get_broker(&self, namespace: &str, name: &str) -> Result<Option<Broker>, StoreError> {
        self.get(Kind::Broker, namespace, name)
    }

    /// A trigger.
    pub fn get_trigger(&self, namespace: &str, name: &str) -> Result<Option<Trigger>, StoreError> {
        self.get(Kind::Trigger, namespace, name)
    }

    /// A source of `kind`.
    pub fn get_source(&self, kind: &'static str, namespace: &str, name: &str) -> Result<Option<Source>, StoreError> {
        self.get(Kind::Source(kind), namespace, name)
    }

    /// Brokers in a namespace, or in all namespaces, sorted by namespace and name.
    pub fn list_brokers(&self, namespace: Option<&str>) -> Result<Vec<Broker>, StoreError> {
        self.list(Kind::Broker, namespace)
    }

    /// Triggers in a namespace, or in all namespaces, sorted by namespace and name.
    pub fn list_triggers(&self, namespace: Option<&str>) -> Result<Vec<Trigger>, StoreError> {
        self.list(Kind::Trigger, namespace)
    }

    /// Sources of `kind` in a namespace, or in all namespaces, sorted by namespace and name.
    pub fn list_sources(&self, kind: &'static str, namespace: Option<&str>) -> Result<Vec<Source>, StoreError> {
        self.list(Kind::Source(kind), namespace)
    }

    /// Deletes a broker; returns whether it existed.
    pub fn delete_broker(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        self.delete(Kind::Broker, namespace, name)
    }

    /// Deletes a trigger; returns whether it existed.
    pub fn delete_trigger(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        self.delete(Kind::Trigger, namespace, name)
    }

    /// Deletes a source of `kind`; returns whether it existed.
    pub fn delete_source(&self, kind: &'static str, namespace: &str, name: &str) -> Result<bool, StoreError> {
        self.delete(Kind::Source(kind), namespace, name)
    }

    fn put<S: Serialize + DeserializeOwned + PartialEq>(
        &self,
        kind: Kind,
        resource: Resource<S>,
    ) -> Result<(Resource<S>, Upsert), StoreError> {
        let key = resource_key(kind, &resource);
        let tx = self.db.begin_write()?;
        let prepared = {
            let mut table = tx.open_table(table(kind))?;
            let existing = match table.get(key.as_str())? {
                Some(bytes) => Some(decode(&key, bytes.value())?),
                None => None,
            };
            let prepared = fill_metadata(existing, resource);
            table.insert(key.as_str(), encode(&prepared.0)?.as_slice())?;
            prepared
        };
        tx.commit()?;
        Ok(prepared)
    }

    fn prepare<S: Serialize + DeserializeOwned + PartialEq>(
        &self,
        kind: Kind,
        resource: Resource<S>,
    ) -> Result<(Resource<S>, Upsert), StoreError> {
        let (namespace, name) = names(&resource);
        let existing = self.get(kind, namespace, name)?;
        Ok(fill_metadata(existing, resource))
    }

    fn replace<S: Serialize>(&self, kind: Kind, resource: &Resource<S>) -> Result<(), StoreError> {
        let key = resource_key(kind, resource);
        let tx = self.db.begin_write()?;
        tx.open_table(table(kind))?.insert(key.as_str(), encode(resource)?.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    fn get<S: DeserializeOwned>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Resource<S>>, StoreError> {
        let key = key(kind, namespace, name);
        let tx = self.db.begin_read()?;
        let table = tx.open_table(table(kind))?;
        let value = table.get(key.as_str())?;
        value.map(|bytes| decode(&key, bytes.value())).transpose()
    }

    fn list<S: DeserializeOwned>(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<Resource<S>>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(table(kind))?;
        let mut items = Vec::new();
        let prefix = match (kind, namespace) {
            (Kind::Source(kind), Some(ns)) => Some(format!("{kind}/{ns}/")),
            (Kind::Source(kind), None) => Some(format!("{kind}/")),
            (_, namespace) => namespace.map(|ns| format!("{ns}/")),
        };
        for entry in table.iter()? {
            let (key, value) = entry?;
            if prefix.as_deref().is_some_and(|p| !key.value().starts_with(p)) {
                continue;
            }
            items.push(decode(key.value(), value.value())?);
        }
        Ok(items)
    }

    fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<bool, StoreError> {
        let key = key(kind, namespace, name);
        let tx = self.db.begin_write()?;
        let existed = tx.open_table(table(kind))?.remove(key.as_str())?.is_some();
        tx.commit()?;
        Ok(existed)
    }
}

fn table(kind: Kind) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match kind {
        Kind::Broker => BROKERS,
        Kind::Trigger => TRIGGERS,
        Kind::Source(_) => SOURCES,
    }
}

fn key(kind: Kind, namespace: &str, name: &str) -> String {
    match kind {
        Kind::Source(kind) => format!("{kind}/{namespace}/{name}"),
        Kind::Broker | Kind::Trigger => format!("{namespace}/{name}"),
    }
}

fn names<S>(resource: &Resource<S>) -> (&str, &str) {
    let metadata = &resource.metadata;
    (metadata.namespace.as_deref().unwrap_or_default(), metadata.name.as_deref().unwrap_or_default())
}

fn resource_key<S>(kind: Kind, resource: &Resource<S>) -> String {
    let (namespace, name) = names(resource);
    key(kind, namespace, name)
}

/// The server-set metadata of a create or replace: a new uid and generation 1, or the stored
/// uid and creation time with the generation bumped when the spec changed. Status is never
/// stored.
fn fill_metadata<S: PartialEq>(existing: Option<Resource<S>>, mut resource: Resource<S>) -> (Resource<S>, Upsert) {
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
    (resource, upsert)
}

fn encode<S: Serialize>(resource: &Resource<S>) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(resource).map_err(|e| StoreError::Database(e.to_string()))
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

    #[test]
    fn sources_are_kept_apart_by_kind_and_namespace() {
        let store = Store::in_memory().unwrap();
        let source = |ns: &str, name: &str, spec: serde_json::Value| {
            let body = serde_json::json!({ "spec": spec }).to_string();
            crate::resources::parse_resource::<serde_json::Value>(
                "PingSource",
                &["sources.knative.dev/v1"],
                ns,
                name,
                body.as_bytes(),
            )
            .unwrap()
        };
        let (stored, upsert) = store.put_source("PingSource", source("ns", "a", serde_json::json!({"n": 1}))).unwrap();
        assert_eq!((upsert, stored.metadata.generation), (Upsert::Created, Some(1)));
        assert_eq!(stored.api_version, "sources.knative.dev/v1");
        store.put_source("PingSource", source("ns2", "a", serde_json::json!({}))).unwrap();
        store.put_source("GitHubSource", source("ns", "a", serde_json::json!({}))).unwrap();
        let (again, upsert) = store.put_source("PingSource", source("ns", "a", serde_json::json!({"n": 2}))).unwrap();
        assert_eq!(
            (upsert, again.metadata.generation, again.metadata.uid),
            (Upsert::Replaced, Some(2), stored.metadata.uid)
        );
        assert_eq!(store.list_sources("PingSource", None).unwrap().len(), 2);
        assert_eq!(store.list_sources("PingSource", Some("ns")).unwrap().len(), 1);
        assert_eq!(store.list_sources("GitHubSource", None).unwrap().len(), 1);
        assert!(store.list_brokers(None).unwrap().is_empty());
        assert_eq!(store.get_source("PingSource", "ns", "a").unwrap().unwrap().spec["n"], 2);
        assert!(store.delete_source("PingSource", "ns", "a").unwrap());
        assert!(store.get_source("PingSource", "ns", "a").unwrap().is_none());
        assert!(store.get_source("GitHubSource", "ns", "a").unwrap().is_some());
    }

    #[test]
    fn prepared_resources_are_stored_verbatim_elsewhere() {
        let here = Store::in_memory().unwrap();
        let there = Store::in_memory().unwrap();
        let t = parse_trigger("ns", "t", br#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"}}}"#).unwrap();
        let (prepared, upsert) = here.prepare_trigger(t.clone()).unwrap();
        assert_eq!(upsert, Upsert::Created);
        assert!(here.get_trigger("ns", "t").unwrap().is_none(), "prepare stores nothing");
        there.replace_trigger(&prepared).unwrap();
        here.replace_trigger(&prepared).unwrap();
        assert_eq!(there.get_trigger("ns", "t").unwrap(), Some(prepared.clone()));
        let changed = parse_trigger("ns", "t", br#"{"spec":{"broker":"b","subscriber":{"uri":"http://y/"}}}"#).unwrap();
        let (next, upsert) = here.prepare_trigger(changed).unwrap();
        assert_eq!(
            (upsert, next.metadata.uid.clone(), next.metadata.generation),
            (Upsert::Replaced, prepared.metadata.uid, Some(2))
        );
    }
}
