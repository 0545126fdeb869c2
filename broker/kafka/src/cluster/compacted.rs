//! A compacted topic every node follows from the beginning: a small replicated key/value table.
//! The declarations, the dead-letter store and the state table are built on it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_log::LogError;
use tokio::sync::watch;

use crate::client::{self, blocking, unavailable, Context, Control, Producer};
use crate::config::KafkaConfig;

/// How long the follower waits for a record before checking whether it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A compacted Kafka topic used as a replicated table: every node reads it from the beginning
/// and hands each change to a callback, in log order; a write returns once this node's
/// follower has applied it.
///
/// - **Reads are local**: the callback keeps whatever state it wants (a map, a channel to a
///   controller task). Every node's state converges on the topic's content; a node sees its own
///   writes as soon as the write returns (*read-your-writes*), and other nodes' writes when its
///   follower reaches them (typically milliseconds).
/// - **Writes** are produced with `acks=all` and idempotence, so they are durable and keep their
///   order per key. A write of several changes is not atomic: after a failure some may be
///   stored.
/// - **Compaction** (`cleanup.policy=compact`, one partition for a total order) keeps the last
///   value of each key; a change with no value is a *tombstone* that deletes the key, and
///   tombstones themselves are removed after the topic's `delete.retention.ms` (default one
///   day), so a follower that starts later never sees keys deleted long ago.
///
/// To consume the changes as a stream, send them into a channel from the callback, as
/// [`KafkaDeclarations`](crate::KafkaDeclarations) does.
///
/// The callback runs on the follower's own thread: it must not block for long, and must not
/// wait for a write to this topic (that write waits for the callback).
pub struct CompactedTopic {
    topic: String,
    producer: Producer,
    control: Arc<Control>,
    /// Per partition, the offset after the last change applied.
    applied: watch::Receiver<Vec<u64>>,
    stop: Arc<AtomicBool>,
    write_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for CompactedTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactedTopic").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl CompactedTopic {
    /// Follows the compacted Kafka topic `topic` (its full name, e.g.
    /// [`KafkaConfig::declarations_topic`]), creating it if missing (one partition,
    /// `cleanup.policy=compact`, the configured replication factor).
    ///
    /// `apply(key, value)` is called for every record from the beginning of the topic, in
    /// order; `value` is `None` for a tombstone. Records without a key are skipped. Returns once
    /// every record present at the call has been applied, so the caller starts from the whole
    /// table.
    pub async fn open<F>(config: &KafkaConfig, topic: &str, apply: F) -> Result<CompactedTopic, LogError>
    where
        F: FnMut(&[u8], Option<&[u8]>) + Send + 'static,
    {
        let context = Context::new(config);
        let control: Arc<Control> = Arc::new(client::create(&config.control(None), context.clone())?);
        let producer: Producer = client::create(&config.producer(), context.clone())?;
        let partitions = client::ensure_topic(config, &control, topic, 1, &[("cleanup.policy", "compact")]).await?;

        let consumer: BaseConsumer<Context> = client::create(
            &config.reader(&format!("{}follower-{:016x}", config.topic_prefix, fastrand::u64(..))),
            context,
        )?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition as i32, Offset::Beginning)
                .map_err(|e| unavailable(format!("cannot follow topic '{topic}'"), &e))?;
        }
        consumer.assign(&assignment).map_err(|e| unavailable(format!("cannot follow topic '{topic}'"), &e))?;

        let (applied_tx, applied) = watch::channel(vec![0; partitions as usize]);
        let stop = Arc::new(AtomicBool::new(false));
        let follower = Follower { consumer, topic: topic.to_owned(), applied: applied_tx, stop: Arc::clone(&stop) };
        std::thread::Builder::new()
            .name("kafka-follower".to_owned())
            .spawn(move || follower.run(apply))
            .map_err(LogError::Io)?;

        let followed = CompactedTopic {
            topic: topic.to_owned(),
            producer,
            control,
            applied,
            stop,
            write_timeout: config.append_timeout,
            request_timeout: config.request_timeout,
        };
        followed.sync().await?;
        Ok(followed)
    }

    /// The Kafka topic followed.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sets `key` to `value`; returns once the change is durable and applied on this node.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        self.write(&[(key, Some(value))]).await
    }

    /// Deletes `key` (writes a tombstone); returns once it is durable and applied on this node.
    pub async fn delete(&self, key: &[u8]) -> Result<(), LogError> {
        self.write(&[(key, None)]).await
    }

    /// Writes several changes (`None`: delete), in order; returns once all are durable and
    /// applied on this node. Not atomic: when it fails, some changes may be stored.
    pub async fn write(&self, changes: &[(&[u8], Option<&[u8]>)]) -> Result<(), LogError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let mut deliveries = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            loop {
                match self.send(key, *value) {
                    Ok(Some(delivery)) => break deliveries.push(delivery),
                    // The producer's queue is full: wait for room, within the bound.
                    Ok(None) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Ok(None) => {
                        return Err(LogError::Unavailable(format!(
                            "kafka producer queue full for topic '{}'",
                            self.topic
                        )))
                    }
                    Err(e) => return Err(unavailable(format!("cannot write to topic '{}'", self.topic), &e)),
                }
            }
        }
        let mut written: Vec<Option<u64>> = Vec::new();
        for delivery in deliveries {
            let delivered = match tokio::time::timeout_at(deadline, delivery).await {
                Ok(Ok(Ok(delivery))) => delivery,
                Ok(Ok(Err((e, _)))) => return Err(unavailable(format!("cannot write to topic '{}'", self.topic), &e)),
                Ok(Err(_)) | Err(_) => {
                    return Err(LogError::Unavailable(format!(
                        "kafka did not acknowledge a write to topic '{}' within {:?}",
                        self.topic, self.write_timeout
                    )))
                }
            };
            let partition = delivered.partition as usize;
            if written.len() <= partition {
                written.resize(partition + 1, None);
            }
            written[partition] = written[partition].max(Some(delivered.offset as u64));
        }
        let targets: Vec<u64> = written.iter().map(|offset| offset.map_or(0, |o| o + 1)).collect();
        self.wait_applied(&targets).await
    }

    /// Waits until every change written to the topic before the call (by any node) has been
    /// applied here: a read after `sync` sees them.
    pub async fn sync(&self) -> Result<(), LogError> {
        let (control, topic, timeout) = (Arc::clone(&self.control), self.topic.clone(), self.request_timeout);
        let partitions = self.applied.borrow().len();
        let ends = blocking(move || client::high_watermarks(&control, &topic, 0..partitions as i32, timeout))
            .await?
            .map_err(|e| unavailable(format!("cannot read the end of topic '{}'", self.topic), &e))?;
        self.wait_applied(&ends).await
    }

    fn send(&self, key: &[u8], value: Option<&[u8]>) -> Result<Option<DeliveryFuture>, KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        match self.producer.send_result(record) {
            Ok(delivery) => Ok(Some(delivery)),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(None),
            Err((e, _)) => Err(e),
        }
    }

    /// Waits until the follower has applied everything below `targets` (per partition).
    async fn wait_applied(&self, targets: &[u64]) -> Result<(), LogError> {
        let mut applied = self.applied.clone();
        let reached = |applied: &Vec<u64>| targets.iter().zip(applied).all(|(target, applied)| applied >= target);
        let waited = tokio::time::timeout(self.request_timeout, applied.wait_for(reached)).await.map(|r| r.is_ok());
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => Err(LogError::Unavailable(format!("the follower of topic '{}' stopped", self.topic))),
            Err(_) => Err(LogError::Unavailable(format!(
                "the follower of topic '{}' did not read the topic up to {targets:?} within {:?}",
                self.topic, self.request_timeout
            ))),
        }
    }
}

impl Drop for CompactedTopic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The thread that reads the topic and applies its changes.
struct Follower {
    consumer: BaseConsumer<Context>,
    topic: String,
    applied: watch::Sender<Vec<u64>>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn run<F: FnMut(&[u8], Option<&[u8]>)>(self, mut apply: F) {
        let mut last_error: Option<(String, Instant)> = None;
        while !self.stop.load(Ordering::Acquire) {
            match self.consumer.poll(POLL_INTERVAL) {
                None => {}
                Some(Ok(message)) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    match message.key() {
                        Some(key) => {
                            let payload = message.payload();
                            // A callback that panics must not stop the follower: every write
                            // on this node waits for it.
                            if std::panic::catch_unwind(AssertUnwindSafe(|| apply(key, payload))).is_err() {
                                tracing::error!(topic = %self.topic, partition, offset, "applying a change panicked; skipped");
                            }
                        }
                        None => tracing::warn!(topic = %self.topic, partition, offset, "record without a key; skipped"),
                    }
                    self.applied.send_modify(|applied| {
                        if let Some(slot) = applied.get_mut(partition as usize) {
                            *slot = (*slot).max(offset as u64 + 1);
                        }
                    });
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(error)) if client::say_again(&mut last_error, &error) => {
                    tracing::warn!(topic = %self.topic, %error, "following the topic");
                }
                Some(Err(_)) => {}
            }
        }
    }
}
