//! The Kafka backend: [`switchyard_log::EventLog`] on an Apache Kafka cluster, following
//! Knative's Kafka broker (one topic per broker, one consumer group per trigger), and what the
//! nodes sharing that cluster share besides events: the declarations every node applies
//! ([`KafkaDeclarations`]) and the placement of work that runs on one node at a time
//! ([`KafkaPlacement`]). [`open`] opens all three as a [`switchyard_log::Backend`].
//!
//! This is the only crate that links librdkafka, so it also holds the reader of outside
//! clusters' records that KafkaSource uses ([`KafkaRecords`]).
//!
//! Every consumer that hands records to an async reader (a trigger's subscription, a reader of
//! one partition, a KafkaSource's group member) runs on one core: a thread per librdkafka
//! consumer that polls all the time, so that rebalances are served even while the reader is
//! slow, and a bounded buffer between them.
//!
//! # Mapping
//!
//! | log | Kafka |
//! |---|---|
//! | topic `ns.broker` | topic `{prefix}ns.broker` ([`KafkaConfig::partitions`], default 8, and [`KafkaConfig::replication_factor`], default 1) |
//! | event | a record in the CloudEvents Kafka binding's binary mode ([`switchyard_event::kafka`]): `ce_` headers, `content-type`, the data as the value, the `partitionkey` extension as the key |
//! | group `ns.trigger` | consumer group `{prefix}ns.trigger`, created with committed offsets at the end of every partition |
//! | [`Subscription::commit`] | the group's committed offset (stored at once, committed every second, on revocation, on `flush` and on close) |
//! | dead letters | the compacted topic `{prefix}deadletters` ([`KafkaDeadLetters`]) |
//! | the state table ([`switchyard_log::StateStore`]) | the compacted topic `{prefix}state` ([`KafkaState`]) |
//! | declarations ([`switchyard_log::DeclarationLog`]) | the compacted topic `{prefix}config` ([`KafkaDeclarations`], on a [`CompactedTopic`]) |
//! | the slots of the placement ([`switchyard_log::Placement`]) | the partitions of the topic `{prefix}leases` (16 when this backend creates it; no records), held by the members of the consumer group `{prefix}leases` ([`KafkaPlacement`], on [`Leases`]) |
//!
//! # Behaviour worth knowing
//!
//! - **Appends** are acknowledged by every in-sync replica (`acks=all`, idempotent producer)
//!   before `append` returns. A cluster that does not acknowledge within
//!   [`KafkaConfig::append_timeout`] makes the append fail with `LogError::Unavailable` (ingest:
//!   503 and `Retry-After`), never a false success. **A multi-event append is not atomic**:
//!   Kafka has no all-or-nothing write without transactions, so a failed append may have stored
//!   some of its events. The producer's retry of the whole request is what keeps this
//!   at-least-once (a retried batch may store some events twice).
//! - **Partitioning**: an event with a `partitionkey` goes where Kafka's Java-compatible hash of
//!   the key sends it (Kafka binding §3.1). An event without one goes to the partition chosen by
//!   a hash of its `source`: the events of one source stay in order, as they do in the embedded
//!   log, at the price of one partition per source (set `partitionkey` to spread a busy source).
//! - **Groups are balanced across nodes**: every node's subscription to a trigger's group is a
//!   member of the same consumer group, so the partitions are shared out and each event is read
//!   by one node. When partitions move (a node joins or leaves), events whose delivery was in
//!   flight on the old owner are delivered again by the new one, from the group's last commit:
//!   at-least-once, as after a crash. The old owner's later commits for those partitions are
//!   ignored.
//! - **A group exists** while it has committed offsets on the topic. Kafka drops the offsets
//!   of a group that has had no member for `offsets.retention.minutes` (default 7 days): a
//!   trigger whose every node was down that long must be recreated (its subscription fails with
//!   `UnknownGroup`).
//! - **Deleting a topic** deletes its events and, through Kafka, the committed offsets of every
//!   group on it. Deleting a group deletes the Kafka consumer group: a group id is one trigger's,
//!   on one topic.
//! - **Declarations** are numbered on every node in the order of the config topic, which is
//!   the same everywhere: a change published on any node is applied by all of them, in the same
//!   order, within moments. A publish returns once this node's follower has read it back.
//! - **Placement**: a slot is held by one live node, and moves only after its old node stopped
//!   what runs on it ([`switchyard_log::Release`]); a node that dies loses its slots after its
//!   6 s session. Across a network partition, exactly one holder is not guaranteed (see
//!   [`Leases`]).
//! - **Cost per trigger and node**: one librdkafka consumer (a few threads and connections) and
//!   one thread of ours, with at most a few MiB buffered.

mod client;
mod cluster;
mod config;
mod consumer;
mod deadletters;
mod producers;
mod records;
mod state;
mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_event::kafka::{self as binding, KafkaRecord};
use switchyard_event::Event;
use switchyard_log::{Backend, DeadLetterStore, EventLog, LogError, MetricDescription, StateStore, Subscription};

use crate::client::{blocking, unavailable, Context, Control, Producer};
use crate::subscription::{KafkaSubscription, Registry, Start};

pub use crate::cluster::{shared_key, CompactedTopic, KafkaDeclarations, KafkaPlacement, Leases};
pub use crate::config::{KafkaConfig, KafkaConfigError};
pub use crate::deadletters::KafkaDeadLetters;
pub use crate::producers::KafkaProducers;
pub use crate::records::KafkaRecords;
pub use crate::state::KafkaState;

/// Opens the Kafka backend of one node: connects the log (loading its dead letters and state
/// table), follows the declarations and joins the placement's lease group, creating the topics
/// they need. Fails with `LogError::Unavailable`, naming the address, when the cluster does not
/// answer within [`KafkaConfig::connect_timeout`].
pub async fn open(config: KafkaConfig) -> Result<Backend, LogError> {
    let log = KafkaLog::connect(config).await?;
    let declarations = KafkaDeclarations::open(log.config()).await?;
    let placement = KafkaPlacement::join(log.config()).await?;
    Ok(Backend { log: Arc::new(log), declarations: Arc::new(declarations), placement: Arc::new(placement) })
}

/// The Kafka log backend. Cheap to share behind an `Arc`; every node of a Switchyard cluster
/// opens its own against the same Kafka cluster and prefix.
pub struct KafkaLog {
    config: KafkaConfig,
    context: Context,
    /// Replaced when librdkafka reports the idempotent producer failed for good.
    producer: RwLock<Producer>,
    admin: AdminClient<Context>,
    control: Arc<Control>,
    /// Partition counts of the topics known to exist, so that an append costs no metadata
    /// request; dropped on deletion and on any produce failure.
    topics: Mutex<HashMap<String, u32>>,
    subscriptions: Arc<Registry>,
    dead_letters: Arc<KafkaDeadLetters>,
    state: Arc<KafkaState>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog").field("config", &self.config).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The partition of an event without a `partitionkey`: a hash of its `source` (FNV-1a, stable
/// across versions and nodes), so that the events of one source stay in order.
fn keyless_partition(event: &Event, partitions: u32) -> i32 {
    let hash =
        event.source().bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    (hash % partitions.max(1)) as i32
}

impl KafkaLog {
    /// Connects to the cluster and loads the dead-letter store (creating its topic if needed).
    /// Fails with `LogError::Unavailable`, naming the address, when the cluster does not answer
    /// within [`KafkaConfig::connect_timeout`].
    pub async fn connect(config: KafkaConfig) -> Result<KafkaLog, LogError> {
        let context = Context::new(&config);
        let control = client::reach(&config, &context).await?;
        let producer = client::create(&config.producer(), context.clone())?;
        let admin = client::create(&config.control(None), context.clone())?;
        let dead_letters = Arc::new(KafkaDeadLetters::open(&config).await?);
        let state = Arc::new(KafkaState::open(&config).await?);
        Ok(KafkaLog {
            config,
            context,
            producer: RwLock::new(producer),
            admin,
            control,
            topics: Mutex::new(HashMap::new()),
            subscriptions: Arc::default(),
            dead_letters,
            state,
        })
    }

    /// The settings it runs with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The dead-letter store, with its concrete type.
    pub fn kafka_dead_letters(&self) -> &Arc<KafkaDeadLetters> {
        &self.dead_letters
    }

    fn producer(&self) -> Producer {
        self.producer.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn admin_options(&self) -> AdminOptions {
        AdminOptions::new()
            .operation_timeout(Some(self.config.request_timeout))
            .request_timeout(Some(self.config.request_timeout))
    }

    /// The partition count of `topic`: from the cache, or (`fresh`) from the cluster.
    async fn partitions(&self, topic: &str, fresh: bool) -> Result<u32, LogError> {
        if !fresh {
            if let Some(partitions) = lock(&self.topics).get(topic) {
                return Ok(*partitions);
            }
        }
        let (control, kafka_topic, timeout) =
            (Arc::clone(&self.control), self.config.kafka_topic(topic), self.config.request_timeout);
        match blocking(move || client::partition_count(&control, &kafka_topic, timeout)).await? {
            Ok(Some(partitions)) => {
                lock(&self.topics).insert(topic.to_owned(), partitions);
                Ok(partitions)
            }
            Ok(None) => {
                lock(&self.topics).remove(topic);
                Err(LogError::UnknownTopic(topic.to_owned()))
            }
            Err(e) => Err(unavailable(format!("cannot look up topic '{topic}'"), &e)),
        }
    }

    /// Waits until the cluster's metadata says `topic` exists (and is served) or not.
    async fn await_topic(&self, topic: &str, exists: bool) -> Result<(), LogError> {
        let (control, kafka_topic, timeout) =
            (Arc::clone(&self.control), self.config.kafka_topic(topic), self.config.request_timeout);
        let settled = blocking(move || {
            let deadline = Instant::now() + timeout;
            if !exists {
                return client::wait_until(timeout, |left| {
                    client::partition_count(&control, &kafka_topic, left.min(timeout)).map(|p| p.is_none())
                });
            }
            if !client::wait_until(timeout, |left| client::topic_ready(&control, &kafka_topic, left.min(timeout)))? {
                return Ok(false);
            }
            // The metadata names leaders a moment before they answer: served means every
            // partition tells its end.
            let partitions = client::partition_count(&control, &kafka_topic, timeout)?.unwrap_or(0);
            let left = deadline.saturating_duration_since(Instant::now());
            client::high_watermarks(&control, &kafka_topic, 0..partitions as i32, left).map(|_| true)
        })
        .await?
        .map_err(|e| unavailable(format!("cannot look up topic '{topic}'"), &e))?;
        if !settled {
            let state = if exists { "served" } else { "gone" };
            return Err(LogError::Unavailable(format!("topic '{topic}' is not {state} after {timeout:?}")));
        }
        Ok(())
    }

    /// Enqueues one record; `None` when the producer's queue is full.
    fn send(
        producer: &Producer,
        kafka_topic: &str,
        record: &KafkaRecord,
        partition: Option<i32>,
    ) -> Result<Option<DeliveryFuture>, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key: key.as_str(), value: Some(value.as_slice()) });
        }
        let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(kafka_topic).headers(headers);
        if let Some(value) = &record.value {
            future_record = future_record.payload(&value[..]);
        }
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_slice());
        }
        if let Some(partition) = partition {
            future_record = future_record.partition(partition);
        }
        match producer.send_result(future_record) {
            Ok(delivery) => Ok(Some(delivery)),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(None),
            Err((error, _)) => Err(error),
        }
    }

    async fn append_within_bound(&self, topic: &str, events: &[Event]) -> Result<(), LogError> {
        let partitions = self.partitions(topic, false).await?;
        if events.is_empty() {
            return Ok(());
        }
        let kafka_topic = self.config.kafka_topic(topic);
        let producer = self.producer();
        let records: Vec<(KafkaRecord, Option<i32>)> = events
            .iter()
            .map(|event| {
                let record = binding::encode_binary(event);
                let partition = record.key.is_none().then(|| keyless_partition(event, partitions));
                (record, partition)
            })
            .collect();
        let deadline = tokio::time::Instant::now() + self.config.append_timeout;
        // Every record is enqueued before any is awaited: they go out in one batch, in order.
        let mut deliveries = Vec::with_capacity(records.len());
        for (record, partition) in &records {
            loop {
                match Self::send(&producer, &kafka_topic, record, *partition) {
                    Ok(Some(delivery)) => break deliveries.push(delivery),
                    Ok(None) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Ok(None) => {
                        return Err(LogError::Unavailable(format!("kafka producer queue full for topic '{topic}'")))
                    }
                    Err(error) => return Err(self.produce_failed(topic, &producer, &error).await),
                }
            }
        }
        for delivery in deliveries {
            // librdkafka fails the record itself at `message.timeout.ms`; the margin only
            // covers its bookkeeping.
            match tokio::time::timeout_at(deadline + Duration::from_millis(500), delivery).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((error, _)))) => return Err(self.produce_failed(topic, &producer, &error).await),
                Ok(Err(_)) | Err(_) => {
                    lock(&self.topics).remove(topic);
                    return Err(LogError::Unavailable(format!(
                        "kafka did not acknowledge the append to topic '{topic}' within {:?}",
                        self.config.append_timeout
                    )));
                }
            }
        }
        Ok(())
    }

    /// What a failed produce means: the topic is gone, or the cluster cannot take it now.
    async fn produce_failed(&self, topic: &str, producer: &Producer, error: &KafkaError) -> LogError {
        lock(&self.topics).remove(topic);
        if let Some((code, reason)) = producer.client().fatal_error() {
            // The idempotent producer cannot go on (e.g. its sequence numbers were lost with a
            // deleted partition): start a fresh one for the next append.
            tracing::error!(%code, %reason, "kafka producer failed for good; replacing it");
            match client::create(&self.config.producer(), self.context.clone()) {
                Ok(fresh) => *self.producer.write().unwrap_or_else(PoisonError::into_inner) = fresh,
                Err(error) => tracing::error!(%error, "cannot replace the kafka producer"),
            }
        }
        if client::is_unknown_topic(error) {
            if let Err(unknown @ LogError::UnknownTopic(_)) = self.partitions(topic, true).await {
                return unknown;
            }
        }
        unavailable(format!("cannot append to topic '{topic}'"), error)
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        Arc::clone(&self.dead_letters) as Arc<dyn DeadLetterStore>
    }

    fn state(&self) -> Arc<dyn StateStore> {
        Arc::clone(&self.state) as Arc<dyn StateStore>
    }

    async fn create_topic(&self, topic: &str) -> Result<(), LogError> {
        let kafka_topic = self.config.kafka_topic(topic);
        let partitions = i32::try_from(self.config.partitions).unwrap_or(i32::MAX);
        let replication = i32::from(self.config.replication_factor);
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let new_topic = NewTopic::new(&kafka_topic, partitions, TopicReplication::Fixed(replication));
            let results = self
                .admin
                .create_topics([&new_topic], &self.admin_options())
                .await
                .map_err(|e| unavailable(format!("cannot create topic '{topic}'"), &e))?;
            match results.into_iter().find_map(Result::err).map(|(_, code)| code) {
                None => break,
                // Idempotent: an existing topic keeps its events and partitions. Kafka also
                // says so for a topic still being deleted; then wait and create it again.
                Some(RDKafkaErrorCode::TopicAlreadyExists) => match self.partitions(topic, true).await {
                    Ok(_) => return Ok(()),
                    Err(LogError::UnknownTopic(_)) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(LogError::UnknownTopic(_)) => {
                        return Err(LogError::Unavailable(format!("topic '{topic}' is still being deleted")))
                    }
                    Err(error) => return Err(error),
                },
                Some(
                    code @ (RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::InvalidPartitions
                    | RDKafkaErrorCode::InvalidReplicationFactor
                    | RDKafkaErrorCode::InvalidConfig
                    | RDKafkaErrorCode::PolicyViolation),
                ) => {
                    return Err(LogError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("kafka refused to create topic '{kafka_topic}': {code}"),
                    )))
                }
                Some(code) => {
                    return Err(LogError::Unavailable(format!("kafka could not create topic '{kafka_topic}': {code}")))
                }
            }
        }
        self.await_topic(topic, true).await?;
        self.partitions(topic, true).await.map(drop)
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), LogError> {
        lock(&self.topics).remove(topic);
        let kafka_topic = self.config.kafka_topic(topic);
        let results = self
            .admin
            .delete_topics(&[&kafka_topic], &self.admin_options())
            .await
            .map_err(|e| unavailable(format!("cannot delete topic '{topic}'"), &e))?;
        match results.into_iter().find_map(Result::err).map(|(_, code)| code) {
            None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {}
            Some(code) => {
                return Err(LogError::Unavailable(format!("kafka could not delete topic '{kafka_topic}': {code}")))
            }
        }
        // Kafka deletes asynchronously: once the metadata no longer lists the topic, an append
        // is refused and a new topic of that name can be created.
        self.await_topic(topic, false).await?;
        lock(&self.topics).remove(topic);
        Ok(())
    }

    async fn append(&self, topic: &str, events: &[Event]) -> Result<(), LogError> {
        // The metadata lookup of a topic not yet cached counts against the same bound.
        let bound = self.config.append_timeout + Duration::from_secs(1);
        match tokio::time::timeout(bound, self.append_within_bound(topic, events)).await {
            Ok(appended) => appended,
            Err(_) => Err(LogError::Unavailable(format!(
                "kafka did not acknowledge the append to topic '{topic}' within {bound:?}"
            ))),
        }
    }

    async fn create_group(&self, topic: &str, group: &str) -> Result<(), LogError> {
        let partitions = self.partitions(topic, true).await?;
        let group_id = self.config.group_id(group);
        let (config, context) = (self.config.control(Some(&group_id)), self.context.clone());
        let (kafka_topic, timeout) = (self.config.kafka_topic(topic), self.config.request_timeout);
        blocking(move || {
            let consumer: Control = client::create(&config, context)?;
            let mut all = TopicPartitionList::new();
            for partition in 0..partitions {
                all.add_partition(&kafka_topic, partition as i32);
            }
            let committed = consumer
                .committed_offsets(all, timeout)
                .map_err(|e| unavailable(format!("cannot read the offsets of group '{group_id}'"), &e))?;
            let missing: Vec<i32> = committed
                .elements()
                .iter()
                .filter(|e| !matches!(e.offset(), Offset::Offset(_)))
                .map(|e| e.partition())
                .collect();
            if missing.is_empty() {
                return Ok(()); // the group exists: it keeps its position
            }
            let highs = client::high_watermarks(&consumer, &kafka_topic, missing.iter().copied(), timeout)
                .map_err(|e| unavailable(format!("cannot read the end of topic '{kafka_topic}'"), &e))?;
            let mut ends = TopicPartitionList::new();
            for (&partition, &high) in missing.iter().zip(&highs) {
                ends.add_partition_offset(&kafka_topic, partition, Offset::Offset(high as i64))
                    .map_err(|e| unavailable(format!("cannot position group '{group_id}'"), &e))?;
            }
            // Synchronous: the group is durable on return, so no later event can be skipped.
            match consumer.commit(&ends, CommitMode::Sync) {
                Ok(()) => Ok(()),
                // Partitions added to a topic whose group has live members: those members
                // read them from the beginning (`auto.offset.reset=earliest`), which is right
                // for partitions younger than the group.
                Err(error) if missing.len() < partitions as usize => {
                    tracing::warn!(group = %group_id, %error, ?missing, "cannot position new partitions of a live group");
                    Ok(())
                }
                Err(error) => Err(unavailable(format!("cannot create group '{group_id}'"), &error)),
            }
        })
        .await?
    }

    async fn delete_group(&self, _topic: &str, group: &str) -> Result<(), LogError> {
        let group_id = self.config.group_id(group);
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let results = self
                .admin
                .delete_groups(&[&group_id], &self.admin_options())
                .await
                .map_err(|e| unavailable(format!("cannot delete group '{group_id}'"), &e))?;
            match results.into_iter().find_map(Result::err).map(|(_, code)| code) {
                None | Some(RDKafkaErrorCode::GroupIdNotFound) => return Ok(()),
                // A member still leaving (a subscription just dropped), or a coordinator moving:
                // both pass.
                Some(
                    RDKafkaErrorCode::NonEmptyGroup
                    | RDKafkaErrorCode::CoordinatorLoadInProgress
                    | RDKafkaErrorCode::CoordinatorNotAvailable
                    | RDKafkaErrorCode::NotCoordinator,
                ) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
                Some(RDKafkaErrorCode::NonEmptyGroup) => {
                    return Err(LogError::Unavailable(format!(
                        "consumer group '{group_id}' still has members (a node still runs the trigger)"
                    )))
                }
                Some(code) => {
                    return Err(LogError::Unavailable(format!("kafka could not delete group '{group_id}': {code}")))
                }
            }
        }
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, LogError> {
        let partitions = self.partitions(topic, true).await?;
        let group_id = self.config.group_id(group);
        let start = Start {
            config: self.config.group_member(&group_id),
            context: self.context.clone(),
            kafka_topic: self.config.kafka_topic(topic),
            topic: topic.to_owned(),
            request_timeout: self.config.request_timeout,
        };
        let (registry, group) = (Arc::clone(&self.subscriptions), group.to_owned());
        let subscription = blocking(move || KafkaSubscription::member(start, &group, partitions, &registry)).await??;
        Ok(Box::new(subscription))
    }

    async fn reader(&self, topic: &str, partition: u32, offset: u64) -> Result<Box<dyn Subscription>, LogError> {
        let partitions = self.partitions(topic, false).await?;
        if partition >= partitions {
            return Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("topic '{topic}' has no partition {partition} (it has {partitions})"),
            )));
        }
        let reader_group = format!("{}reader-{:016x}", self.config.topic_prefix, fastrand::u64(..));
        let start = Start {
            config: self.config.reader(&reader_group),
            context: self.context.clone(),
            kafka_topic: self.config.kafka_topic(topic),
            topic: topic.to_owned(),
            request_timeout: self.config.request_timeout,
        };
        let registry = Arc::clone(&self.subscriptions);
        let subscription = blocking(move || KafkaSubscription::reader(start, partition, offset, &registry)).await??;
        Ok(Box::new(subscription))
    }

    async fn flush(&self) -> Result<(), LogError> {
        self.subscriptions.flush().await
    }

    fn single_partition(&self) -> bool {
        // Each node reads only the partitions the group protocol gives it.
        false
    }

    fn metrics(&self) -> &'static [MetricDescription] {
        // This backend records no series of its own: what it does shows in the callers'
        // (ingest, delivery, backlog), and librdkafka's statistics are not collected.
        &[]
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, LogError> {
        let partitions = self.partitions(topic, false).await?;
        let (control, kafka_topic, timeout) =
            (Arc::clone(&self.control), self.config.kafka_topic(topic), self.config.request_timeout);
        let ends =
            blocking(move || client::high_watermarks(&control, &kafka_topic, 0..partitions as i32, timeout)).await?;
        match ends {
            Ok(ends) => Ok(ends),
            Err(error) if client::is_unknown_topic(&error) => {
                lock(&self.topics).remove(topic);
                self.partitions(topic, true).await?;
                Err(unavailable(format!("cannot read the end of topic '{topic}'"), &error))
            }
            Err(error) => Err(unavailable(format!("cannot read the end of topic '{topic}'"), &error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_event::AttrValue;

    fn event(source: &str) -> Event {
        let attributes = vec![
            ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
            ("id".to_owned(), AttrValue::String("1".to_owned())),
            ("source".to_owned(), AttrValue::String(source.to_owned())),
            ("type".to_owned(), AttrValue::String("t".to_owned())),
        ];
        Event::new(attributes, None).unwrap()
    }

    #[test]
    fn keyless_events_of_one_source_share_a_partition_and_sources_spread() {
        assert_eq!(keyless_partition(&event("/a"), 8), keyless_partition(&event("/a"), 8));
        let used: std::collections::HashSet<i32> =
            (0..64).map(|i| keyless_partition(&event(&format!("/source/{i}")), 8)).collect();
        assert!(used.len() >= 6, "{used:?}");
        assert!(used.iter().all(|p| (0..8).contains(p)));
        assert_eq!(keyless_partition(&event("/a"), 1), 0);
    }
}
