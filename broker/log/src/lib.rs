//! What every Switchyard backend implements, and all the engine knows of one: the event log
//! ([`EventLog`], [`Subscription`]), the dead-letter store and the state table beside it, the
//! declaration log ([`DeclarationLog`]), the placement of one-node work ([`Placement`]), and
//! outside Kafka clusters' records ([`records`]); plus [`Admit`], the engine's one way into a
//! broker as the crates below the engine see it.
//!
//! Invariant: nothing above this crate knows which backend runs. The embedded log and the
//! Kafka log implement these traits; only the binary opens one (enforced for the dependencies
//! by `tests/tests/architecture.rs`).
//!
//! The model follows Kafka's: a broker owns one *topic*; a topic has one or more *partitions*
//! (the embedded log has exactly one, partition 0) of events at increasing offsets; every
//! trigger reads through its own *group*, whose committed position is the next offset to read
//! in each partition. A group commits only offsets below which every event has a final
//! outcome, so a restart resumes at-least-once.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use switchyard_event::Event;

pub mod addresses;
pub mod admission;
pub mod backoff;
mod declarations;
mod placement;
pub mod records;
pub mod supervise;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use admission::{Admit, Admitted, Origin, Refusal};
pub use declarations::{Change, Changes, DeclarationLog};
pub use placement::{slot_of, Placement, Release, SingleNode};

/// What a node runs on: the event log and the two things that make a cluster of nodes one
/// system — the log of declarations they all apply, and the placement of work that runs on one
/// node at a time. Each backend crate opens one; nothing above this crate knows which.
#[derive(Clone)]
pub struct Backend {
    /// Events, groups, dead letters and the state table.
    pub log: Arc<dyn EventLog>,
    /// Brokers, triggers and sources, as changes every node applies.
    pub declarations: Arc<dyn DeclarationLog>,
    /// Which slots of one-node-at-a-time work this node holds.
    pub placement: Arc<dyn Placement>,
}

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of samples.
    Histogram,
}

/// A series a backend records through the `metrics` facade, described so that the exporter
/// can give it help text without knowing the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDescription {
    /// The series name, `switchyard_log_…`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// `seconds`, `bytes`, or empty for a count.
    pub unit: &'static str,
    /// One sentence for `# HELP`.
    pub help: &'static str,
}

/// Where an event sits in a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The partition (always 0 in the embedded log).
    pub partition: u32,
    /// The offset within the partition.
    pub offset: u64,
}

/// An event read back from the log.
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// Where it sits.
    pub position: Position,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The event, shared so that fan-out to many deliveries copies nothing.
    pub event: Arc<Event>,
    /// Why the record could not be decoded, when it could not: `event` is then the stand-in
    /// from [`LogEvent::undecodable`], which is never delivered or filtered but moved aside
    /// (dead-lettered with this reason), so a reader never stalls on a bad record.
    pub undecodable: Option<Arc<str>>,
}

/// The `type` of the stand-in for a record that is not an event.
pub const UNDECODABLE_TYPE: &str = "dev.switchyard.record.undecodable";

impl LogEvent {
    /// An event read back whole.
    pub fn new(position: Position, timestamp_ms: i64, event: Arc<Event>) -> LogEvent {
        LogEvent { position, timestamp_ms, event, undecodable: None }
    }

    /// A record of `topic` that could not be decoded, for `reason`, carried by a stand-in
    /// event a user can find among dead letters: `type` [`UNDECODABLE_TYPE`], `source`
    /// `/switchyard/topics/{topic}`, `id` `{partition}-{offset}` (stable, so moving it aside
    /// twice is recognisable), the reason in the `switchyardreason` extension, and the record's
    /// bytes as binary data.
    pub fn undecodable(topic: &str, position: Position, timestamp_ms: i64, record: Bytes, reason: String) -> LogEvent {
        use switchyard_event::model::{AttrValue, Data, DataForm};
        let string = |s: String| AttrValue::String(s);
        let attributes = vec![
            ("specversion".to_owned(), string("1.0".to_owned())),
            ("id".to_owned(), string(format!("{}-{}", position.partition, position.offset))),
            ("source".to_owned(), string(format!("/switchyard/topics/{topic}"))),
            ("type".to_owned(), string(UNDECODABLE_TYPE.to_owned())),
            ("datacontenttype".to_owned(), string("application/octet-stream".to_owned())),
            ("switchyardreason".to_owned(), string(reason.clone())),
        ];
        let data = Some(Data { form: DataForm::Binary, bytes: record });
        LogEvent {
            position,
            timestamp_ms,
            event: Arc::new(Event::new_unchecked(attributes, data)),
            undecodable: Some(reason.into()),
        }
    }
}

/// What can go wrong in a log backend.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The topic does not exist.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// The group does not exist on this topic.
    #[error("unknown group '{group}' on topic '{topic}'")]
    UnknownGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// The backend cannot take the request now (storage full or failing, broker unreachable);
    /// the caller may retry later. Ingest maps this to 503 with `Retry-After`.
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// A storage failure.
    #[error("log i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record at {position:?}: {reason}")]
    Corrupt {
        /// Where.
        position: Position,
        /// Why.
        reason: String,
    },
    /// The log has been closed.
    #[error("log closed")]
    Closed,
}

/// An event whose delivery failed for good, as the dead-letter store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Assigned by the store; ids of one scope sort in the order entries were stored.
    pub id: String,
    /// The original event, unchanged.
    pub event: Event,
    /// Why it was dead-lettered (e.g. "retries exhausted", "not retryable: 400 Bad Request").
    pub reason: String,
    /// Delivery attempts made (to the subscriber, then to the dead-letter sink if any).
    pub attempts: u32,
    /// The last HTTP status received, if any.
    pub last_status: Option<u16>,
    /// The last transport error, if the last attempt got no answer.
    pub last_error: Option<String>,
    /// When it was stored (RFC 3339, UTC).
    pub dead_lettered_at: String,
}

/// Where events that exhausted their delivery go when no dead-letter sink takes them: durable,
/// in the same backend as the log, never dropped. Entries are grouped by *scope* (a trigger,
/// `namespace/name`) and stay until removed.
#[async_trait]
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Stores an entry durably (the `id` given is ignored; the store assigns one) and returns
    /// its id.
    async fn put(&self, scope: &str, entry: DeadLetter) -> Result<String, LogError>;

    /// Up to `limit` entries of `scope` in id order, starting after `after`.
    async fn list(&self, scope: &str, after: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>, LogError>;

    /// One entry.
    async fn get(&self, scope: &str, id: &str) -> Result<Option<DeadLetter>, LogError>;

    /// Removes one entry; returns whether it existed.
    async fn remove(&self, scope: &str, id: &str) -> Result<bool, LogError>;

    /// Removes every entry of `scope`; returns how many.
    async fn purge(&self, scope: &str) -> Result<u64, LogError>;
}

/// A small durable key/value table kept in the log backend, for progress that is neither an
/// event nor a group position: a source's last fired tick, the webhook deliveries it already
/// took. Keys are short paths (`ping/ns/name`); values are opaque bytes. Meant for thousands of
/// entries, not millions: the Kafka backend holds the whole table in memory on every node.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, LogError>;

    /// Sets `key` to `value`, durably on return.
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), LogError>;

    /// Removes `key`, durably on return; removing a missing key succeeds.
    async fn remove(&self, key: &str) -> Result<(), LogError>;

    /// Every entry whose key starts with `prefix`, in key order.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError>;
}

/// A durable, partitioned event log.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The backend's dead-letter store.
    fn dead_letters(&self) -> Arc<dyn DeadLetterStore>;

    /// The backend's key/value table for sources' progress.
    fn state(&self) -> Arc<dyn StateStore>;

    /// Creates a topic. Idempotent: creating an existing topic succeeds and keeps its events.
    async fn create_topic(&self, topic: &str) -> Result<(), LogError>;

    /// Deletes a topic with all its events and groups. Idempotent.
    async fn delete_topic(&self, topic: &str) -> Result<(), LogError>;

    /// Appends events, all or nothing, and returns only once they are durable (fsynced, or
    /// acknowledged by all in-sync replicas). Events are not visible to readers before that.
    async fn append(&self, topic: &str, events: &[Event]) -> Result<(), LogError>;

    /// Creates a group positioned at the current end of every partition, unless it exists
    /// (then it keeps its position). Durable on return, so no event appended afterwards can be
    /// skipped by the group, even after a crash.
    async fn create_group(&self, topic: &str, group: &str) -> Result<(), LogError>;

    /// Deletes a group and its committed positions. Idempotent.
    async fn delete_group(&self, topic: &str, group: &str) -> Result<(), LogError>;

    /// Opens a reader that starts at the group's committed positions.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, LogError>;

    /// Opens a reader of one partition that starts at `offset` and belongs to no group (its
    /// commits are refused): for a reader shared by many groups, which commit their own.
    async fn reader(&self, topic: &str, partition: u32, offset: u64) -> Result<Box<dyn Subscription>, LogError>;

    /// Makes every commit made so far durable (called on shutdown).
    async fn flush(&self) -> Result<(), LogError>;

    /// Whether every topic is a single partition that this node reads in full (one process
    /// owns the log): then one [`reader`](EventLog::reader) of partition 0 can serve every
    /// group of a topic, which is what the dispatcher's per-broker fanout relies on. A backend
    /// with several partitions per topic, balanced over nodes by a group protocol (Kafka),
    /// returns false, and each group then reads only through its own subscription.
    fn single_partition(&self) -> bool {
        true
    }

    /// The series this backend records, for the exporter's help text.
    fn metrics(&self) -> &'static [MetricDescription] {
        &[]
    }

    /// The offset the next appended event of each partition gets (index = partition): how far
    /// a group is behind is this minus its committed position.
    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, LogError>;
}

/// One group's reader.
#[async_trait]
pub trait Subscription: Send {
    /// Waits until at least one event follows the last one returned, then returns up to `max`
    /// of them in log order (per partition).
    ///
    /// Cancel-safe: dropping the future before it completes skips no event, so a dispatcher can
    /// `select!` between reading and other work.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<LogEvent>, LogError>;

    /// Records that every event of `partition` below `next_offset` has a final outcome. The
    /// backend may persist it lazily (a crash then replays a little: at-least-once); `flush`
    /// on the log makes it durable.
    fn commit(&mut self, partition: u32, next_offset: u64) -> Result<(), LogError>;

    /// Moves the reader so that the next batch of `partition` starts at `offset`. Commits are
    /// unaffected.
    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), LogError>;

    /// Where the next batch of `partition` starts, if the reader knows: it reads the partition,
    /// and (for a group member on a backend that assigns partitions, like Kafka) has been
    /// assigned it — which may be `None` until the first batch or seek.
    fn position(&self, partition: u32) -> Option<u64>;
}
