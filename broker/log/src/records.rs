//! Records of an outside Kafka cluster, for the sources that read one (KafkaSource) and the sinks
//! that write one (KafkaSink).
//!
//! The cluster a KafkaSource reads is the user's, not the log's: it is read the same way
//! whichever log backend runs. The types are plain data and the client is a trait, so that
//! the sources know nothing of the Kafka client library; the Kafka backend crate implements
//! [`RecordConnector`], and the binary hands it to the sources.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::LogError;

/// Settings of a [`RecordConsumer`].
#[derive(Clone, PartialEq, Eq)]
pub struct RecordConsumerConfig {
    /// `host:port[,host:port…]`, Kafka's `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The consumer group id, used as given (no prefix): members with the same group share the
    /// partitions and its committed offsets.
    pub group: String,
    /// The topics to read, by name (not patterns).
    pub topics: Vec<String>,
    /// Where a group with no committed offset on a partition starts.
    pub initial_offset: InitialOffset,
    /// The client id, visible in broker logs and quotas.
    pub client_id: String,
    /// How long `connect` waits for the cluster to answer (default 5 s).
    pub connect_timeout: Duration,
    /// Extra client properties, applied last (for example `session.timeout.ms`, or the
    /// security settings: `security.protocol`, `sasl.*`, `ssl.*`).
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for RecordConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordConsumerConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("initial_offset", &self.initial_offset)
            .field("client_id", &self.client_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("properties", &PropertyNames(&self.properties))
            .finish()
    }
}

impl RecordConsumerConfig {
    /// The defaults for group `group` reading `topics` of the cluster at `bootstrap_servers`:
    /// [`InitialOffset::Latest`] (Knative's default), client id `switchyard`, a 5 s connect
    /// timeout, no extra properties.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        group: impl Into<String>,
        topics: Vec<String>,
    ) -> RecordConsumerConfig {
        RecordConsumerConfig {
            bootstrap_servers: bootstrap_servers.into(),
            group: group.into(),
            topics,
            initial_offset: InitialOffset::Latest,
            client_id: "switchyard".to_owned(),
            connect_timeout: Duration::from_secs(5),
            properties: Vec::new(),
        }
    }
}

/// Where a group with no committed offset on a partition starts reading (Kafka's
/// `auto.offset.reset`). It also applies when the committed offset fell out of retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialOffset {
    /// At the oldest record still in the partition.
    Earliest,
    /// At the end: only records produced after the member got the partition.
    #[default]
    Latest,
}

/// A record as read from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp in milliseconds since the Unix epoch (create time or log-append time,
    /// whichever the topic keeps), `None` if it has none.
    pub timestamp_ms: Option<i64>,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its headers, in order; a header can have no value. Headers whose name is not UTF-8 are
    /// left out.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Its value, `None` for a record without one (a tombstone).
    pub value: Option<Bytes>,
}

/// Connects [`RecordConsumer`]s to Kafka clusters.
#[async_trait]
pub trait RecordConnector: Send + Sync + 'static {
    /// Joins the group and subscribes to the topics. Fails with `LogError::Unavailable`,
    /// naming the address, when the cluster does not answer within
    /// [`RecordConsumerConfig::connect_timeout`]; with an `InvalidInput` I/O error for an empty
    /// group or topic list or a name Kafka cannot hold. A topic that does not exist is no
    /// reason to fail: `next_batch` reports it until it does.
    async fn connect(&self, config: RecordConsumerConfig) -> Result<Box<dyn RecordConsumer>, LogError>;
}

/// A member of a consumer group on a Kafka cluster, reading records.
///
/// - **Reading**: [`next_batch`](RecordConsumer::next_batch) returns what has arrived, in
///   order per partition. A record is read by one member of the group at a time.
/// - **Committing**: [`commit`](RecordConsumer::commit) marks the records of a partition
///   below an offset as done; done offsets reach the group within about a second,
///   synchronously when the partition is revoked, and at [`close`](RecordConsumer::close).
///   Nothing is committed that was not marked done: after a crash or a rebalance, the next
///   owner of a partition resumes at its last commit (at-least-once).
/// - **Problems** (a subscribed topic missing, the cluster unreachable) are errors of
///   `next_batch`, repeated at most once a second while they last; the consumer keeps going.
#[async_trait]
pub trait RecordConsumer: Send + 'static {
    /// Waits for records and returns up to `max` of them, in order per partition; or the
    /// problem that keeps them from coming: `LogError::UnknownTopic` for a topic that does not
    /// exist, `LogError::Unavailable` while the cluster does not answer. Cancel-safe.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>, LogError>;

    /// Marks the records of `partition` of `topic` below `next_offset` as done. A commit for a
    /// partition this member does not own (any more) is ignored. Fails only for a negative
    /// offset.
    fn commit(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<(), LogError>;

    /// The partitions this member owns now, as (topic, partition), sorted.
    fn assignment(&self) -> Vec<(String, i32)>;

    /// Commits what was marked done, synchronously, and leaves the group. `Unavailable` when
    /// the final commit failed (the records since the last commit will be read again).
    async fn close(self: Box<Self>) -> Result<(), LogError>;
}

/// A record to produce: the Kafka binding's key, headers and value of one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingRecord {
    /// The key, if any (the event's `partitionkey`).
    pub key: Option<Vec<u8>>,
    /// Header names and values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The value; `None` for a record without one.
    pub value: Option<Bytes>,
}

/// An outside Kafka cluster as a client reaches it: where, and with which security settings.
/// Clients made for equal clusters may be shared; for different settings (other credentials),
/// never.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KafkaCluster {
    /// `host:port[,host:port…]`, Kafka's `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Client properties its clients need (`security.protocol`, SASL, TLS), applied last.
    pub properties: Vec<(String, String)>,
}

impl KafkaCluster {
    /// The cluster at `bootstrap_servers`, reached with `properties`.
    pub fn new(bootstrap_servers: impl Into<String>, properties: Vec<(String, String)>) -> KafkaCluster {
        KafkaCluster { bootstrap_servers: bootstrap_servers.into(), properties }
    }
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCluster")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &PropertyNames(&self.properties))
            .finish()
    }
}

/// Client properties as `Debug` shows them: their names only, since values may be secrets
/// (`sasl.password`, `ssl.key.pem`).
pub struct PropertyNames<'a>(pub &'a [(String, String)]);

impl std::fmt::Debug for PropertyNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

/// Writes records to topics of outside Kafka clusters (KafkaSink), as the connector reads them.
#[async_trait]
pub trait RecordProducer: Send + Sync + 'static {
    /// Produces `records` to `topic` of `cluster`, in order, with
    /// `acks=all` and idempotence; returns once Kafka acknowledged every one of them, or the
    /// first failure: `LogError::Unavailable` when the cluster did not acknowledge within
    /// `timeout`, `LogError::UnknownTopic` when the topic does not exist, `InvalidInput` for a
    /// record Kafka cannot hold.
    async fn produce(
        &self,
        cluster: &KafkaCluster,
        topic: &str,
        records: Vec<OutgoingRecord>,
        timeout: Duration,
    ) -> Result<(), LogError>;

    /// Creates `topic` on `cluster` with `partitions` and `replication_factor` (the cluster's
    /// defaults when `None`) unless it exists; returns once it is served.
    async fn ensure_topic(
        &self,
        cluster: &KafkaCluster,
        topic: &str,
        partitions: Option<i32>,
        replication_factor: Option<i16>,
    ) -> Result<(), LogError>;
}
