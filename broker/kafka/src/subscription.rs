//! Readers of a broker topic: a consumer-group member (`subscribe`) or an assign-only reader of
//! one partition (`reader`). Each owns one librdkafka consumer, driven by its own thread.
//!
//! Why a thread rather than polling from `next_batch`: a consumer must be polled to take part in
//! rebalances, and a dispatcher that stops reading (its window is full while a subscriber is
//! slow) would otherwise hold up every rebalance of its group and be expelled after
//! `max.poll.interval.ms`. The thread polls all the time and hands records over through a
//! bounded buffer; when the buffer is full it pauses fetching, but keeps polling.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_event::kafka;
use switchyard_log::{LogError, LogEvent, Position, Subscription};
use tokio::sync::{oneshot, Notify};

use crate::client::{self, kafka_offset, kafka_partition, now_ms, Context};

/// How long one poll waits: the latency of seeks, commits handed to the thread, flushes and
/// stopping (records themselves are handed over as soon as they arrive).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a flush waits for one subscription's commit.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Every live subscription of a log, so that `flush` can commit them all.
#[derive(Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Shared>>>,
}

impl Registry {
    fn add(&self, shared: &Arc<Shared>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.live).insert(id, Arc::clone(shared));
        id
    }

    fn remove(&self, id: u64) {
        lock(&self.live).remove(&id);
    }

    /// Commits what every live subscription has stored, synchronously; subscriptions being
    /// closed finish their final commit first.
    pub(crate) async fn flush(&self) -> Result<(), LogError> {
        let subscriptions: Vec<Arc<Shared>> = lock(&self.live).values().cloned().collect();
        let mut waiting = Vec::new();
        for shared in subscriptions {
            let mut state = shared.lock();
            if !state.closed && shared.group {
                let (tx, rx) = oneshot::channel();
                state.flushes.push(tx);
                waiting.push(rx);
            }
        }
        for rx in waiting {
            match tokio::time::timeout(FLUSH_TIMEOUT, rx).await {
                Ok(Ok(Ok(()))) | Ok(Err(_)) => {}
                Ok(Ok(Err(error))) => return Err(LogError::Unavailable(error)),
                Err(_) => {
                    return Err(LogError::Unavailable(format!(
                        "a kafka subscription did not commit within {FLUSH_TIMEOUT:?}"
                    )))
                }
            }
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the subscription and its thread share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes `next_batch` when records arrive.
    wake: Notify,
    /// Set when the subscription is dropped: the thread commits, leaves the group and ends.
    stop: AtomicBool,
    /// A group member (commits) rather than a reader.
    group: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

#[derive(Default)]
struct State {
    /// Records read and not yet returned.
    buffer: VecDeque<Item>,
    buffered_bytes: usize,
    /// Per partition, the epoch records must carry to be returned: a seek or a revocation
    /// starts a new one, so that records read before it are dropped.
    epochs: HashMap<u32, u64>,
    /// Per partition, the epoch the thread stamps on what it reads now (it catches up with
    /// `epochs` when it applies a seek).
    stamps: HashMap<u32, u64>,
    /// The partitions this subscription reads (a group member's current assignment).
    assigned: BTreeSet<u32>,
    /// Per partition, the offset the next returned record will have, when known.
    positions: HashMap<u32, u64>,
    /// Commits for the thread to store.
    commits: BTreeMap<u32, i64>,
    /// Seeks for the thread to apply: partition, offset, epoch.
    seeks: Vec<(u32, i64, u64)>,
    /// Flushes waiting for the thread's synchronous commit.
    flushes: Vec<oneshot::Sender<Result<(), String>>>,
    /// The subscription cannot go on.
    fatal: Option<Fatal>,
    /// The thread has ended.
    closed: bool,
}

#[derive(Clone)]
enum Fatal {
    /// The topic was deleted.
    UnknownTopic,
    /// The consumer failed for good.
    Failed(String),
}

/// A record read by the thread.
struct Item {
    epoch: u64,
    position: Position,
    bytes: usize,
    read: Result<LogEvent, String>,
}

/// A subscription or reader of one topic.
pub(crate) struct KafkaSubscription {
    shared: Arc<Shared>,
    /// The log topic, for messages.
    topic: String,
    /// A reader's only partition.
    reader_partition: Option<u32>,
}

/// How to start a subscription's thread.
pub(crate) struct Start {
    pub(crate) config: rdkafka::ClientConfig,
    pub(crate) context: Context,
    pub(crate) kafka_topic: String,
    pub(crate) topic: String,
    pub(crate) request_timeout: Duration,
}

impl KafkaSubscription {
    /// A member of the consumer group configured in `start.config`. Blocking: run it off the
    /// async runtime. `UnknownGroup` when the group has no committed offset on the topic
    /// (`create_group` commits one for every partition).
    pub(crate) fn member(
        start: Start,
        group: &str,
        partitions: u32,
        registry: &Arc<Registry>,
    ) -> Result<KafkaSubscription, LogError> {
        let shared = new_shared(true);
        let context = MemberContext {
            base: start.context.clone(),
            shared: Arc::clone(&shared),
            kafka_topic: start.kafka_topic.clone(),
        };
        let consumer: BaseConsumer<MemberContext> = client::create(&start.config, context)?;
        let mut all = TopicPartitionList::new();
        for partition in 0..partitions {
            all.add_partition(&start.kafka_topic, partition as i32);
        }
        let committed = consumer
            .committed_offsets(all, start.request_timeout)
            .map_err(|e| client::unavailable(format!("cannot read the offsets of group '{group}'"), &e))?;
        if committed.elements().iter().all(|e| !matches!(e.offset(), Offset::Offset(_))) {
            return Err(LogError::UnknownGroup { topic: start.topic, group: group.to_owned() });
        }
        consumer
            .subscribe(&[&start.kafka_topic])
            .map_err(|e| client::unavailable(format!("cannot subscribe to topic '{}'", start.topic), &e))?;
        Ok(spawn(consumer, shared, start, None, registry))
    }

    /// An assign-only reader of `partition` from `offset`. Blocking.
    pub(crate) fn reader(
        start: Start,
        partition: u32,
        offset: u64,
        registry: &Arc<Registry>,
    ) -> Result<KafkaSubscription, LogError> {
        let shared = new_shared(false);
        {
            let mut state = shared.lock();
            state.assigned.insert(partition);
            state.positions.insert(partition, offset);
        }
        let context = MemberContext {
            base: start.context.clone(),
            shared: Arc::clone(&shared),
            kafka_topic: start.kafka_topic.clone(),
        };
        let consumer: BaseConsumer<MemberContext> = client::create(&start.config, context)?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(
                &start.kafka_topic,
                kafka_partition(partition)?,
                Offset::Offset(kafka_offset(offset)?),
            )
            .and_then(|()| consumer.assign(&assignment))
            .map_err(|e| client::unavailable(format!("cannot read topic '{}'", start.topic), &e))?;
        Ok(spawn(consumer, shared, start, Some(partition), registry))
    }
}

fn new_shared(group: bool) -> Arc<Shared> {
    Arc::new(Shared { state: Mutex::new(State::default()), wake: Notify::new(), stop: AtomicBool::new(false), group })
}

fn spawn(
    consumer: BaseConsumer<MemberContext>,
    shared: Arc<Shared>,
    start: Start,
    reader_partition: Option<u32>,
    registry: &Arc<Registry>,
) -> KafkaSubscription {
    let id = registry.add(&shared);
    let worker = Worker {
        consumer,
        shared: Arc::clone(&shared),
        kafka_topic: start.kafka_topic,
        topic: start.topic.clone(),
        reader_partition,
        request_timeout: start.request_timeout,
    };
    let registry = Arc::clone(registry);
    let thread_shared = Arc::clone(&shared);
    let spawned = std::thread::Builder::new().name("kafka-consumer".to_owned()).spawn(move || {
        worker.run();
        registry.remove(id);
    });
    if let Err(error) = spawned {
        let mut state = thread_shared.lock();
        state.fatal = Some(Fatal::Failed(format!("cannot start a consumer thread: {error}")));
        state.closed = true;
    }
    KafkaSubscription { shared, topic: start.topic, reader_partition }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<LogEvent>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        loop {
            // Registered before looking, so that a record arriving in between wakes it.
            let notified = self.shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Everything happens under the lock and without awaiting: dropping this future at
            // the await below loses nothing (cancel safety).
            {
                let mut state = self.shared.lock();
                let mut batch = Vec::new();
                while batch.len() < max {
                    let Some(item) = state.buffer.pop_front() else { break };
                    state.buffered_bytes -= item.bytes;
                    let partition = item.position.partition;
                    if item.epoch != state.epochs.get(&partition).copied().unwrap_or(0) {
                        continue; // read before a seek or a revocation
                    }
                    state.positions.insert(partition, item.position.offset + 1);
                    match item.read {
                        Ok(event) => batch.push(event),
                        // A record that is not an event is reported once, then passed over.
                        Err(reason) if batch.is_empty() => {
                            return Err(LogError::Corrupt { position: item.position, reason })
                        }
                        Err(reason) => {
                            state.positions.insert(partition, item.position.offset);
                            state.buffered_bytes += item.bytes;
                            state.buffer.push_front(Item { read: Err(reason), ..item });
                            break;
                        }
                    }
                }
                if !batch.is_empty() {
                    return Ok(batch);
                }
                match &state.fatal {
                    Some(Fatal::UnknownTopic) => return Err(LogError::UnknownTopic(self.topic.clone())),
                    Some(Fatal::Failed(reason)) => return Err(LogError::Unavailable(reason.clone())),
                    None if state.closed => return Err(LogError::Closed),
                    None => {}
                }
            }
            notified.await;
        }
    }

    fn commit(&mut self, partition: u32, next_offset: u64) -> Result<(), LogError> {
        if !self.shared.group {
            return Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a reader of topic '{}' without a group cannot commit", self.topic),
            )));
        }
        let offset = kafka_offset(next_offset)?;
        let mut state = self.shared.lock();
        // A partition this member no longer owns belongs to another member now, which resumes
        // from the group's last commit: this one's progress on it is moot.
        if state.assigned.contains(&partition) {
            state.commits.insert(partition, offset);
        } else {
            tracing::debug!(topic = %self.topic, partition, next_offset, "commit for a partition not assigned; ignored");
        }
        Ok(())
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), LogError> {
        let kafka_offset = kafka_offset(offset)?;
        let mut state = self.shared.lock();
        let readable = match self.reader_partition {
            Some(only) => only == partition,
            None => state.assigned.contains(&partition),
        };
        if !readable {
            return Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("partition {partition} of topic '{}' is not read by this subscription", self.topic),
            )));
        }
        let epoch = state.epochs.get(&partition).copied().unwrap_or(0) + 1;
        state.epochs.insert(partition, epoch);
        state.positions.insert(partition, offset);
        state.seeks.push((partition, kafka_offset, epoch));
        Ok(())
    }

    fn position(&self, partition: u32) -> Option<u64> {
        let state = self.shared.lock();
        state.assigned.contains(&partition).then(|| state.positions.get(&partition).copied()).flatten()
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // The thread stores the last commits, commits them, leaves the group and ends; `flush`
        // waits for that.
        self.shared.stop.store(true, Ordering::Release);
    }
}

/// The consumer's context: logs go to `tracing`, rebalances update the shared state.
struct MemberContext {
    base: Context,
    shared: Arc<Shared>,
    kafka_topic: String,
}

impl ClientContext for MemberContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.base.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                // Commit what the dispatcher committed before the partitions go: the next owner
                // resumes there rather than at the last auto-commit.
                store_commits(consumer, &self.shared, &self.kafka_topic);
                // A failure is logged; the partitions go either way, and their next owner
                // resumes from the last commit that succeeded.
                let _ = client::commit_stored(consumer, &format_args!("topic '{}'", self.kafka_topic));
                let mut state = self.shared.lock();
                for element in revoked.elements_for_topic(&self.kafka_topic) {
                    let partition = element.partition() as u32;
                    state.assigned.remove(&partition);
                    state.positions.remove(&partition);
                    state.commits.remove(&partition);
                    // Records of the partition still buffered are dropped: the next owner
                    // reads them.
                    let wanted = state.epochs.get(&partition).copied().unwrap_or(0);
                    let stamped = state.stamps.get(&partition).copied().unwrap_or(0);
                    let epoch = wanted.max(stamped) + 1;
                    state.epochs.insert(partition, epoch);
                    state.stamps.insert(partition, epoch);
                }
                tracing::info!(topic = %self.kafka_topic, partitions = ?state.assigned, "partitions revoked");
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => tracing::warn!(topic = %self.kafka_topic, %error, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let mut state = self.shared.lock();
            for element in assigned.elements_for_topic(&self.kafka_topic) {
                state.assigned.insert(element.partition() as u32);
            }
            tracing::info!(topic = %self.kafka_topic, partitions = ?state.assigned, "partitions assigned");
        }
    }
}

/// Hands the dispatcher's commits to librdkafka's offset store (committed by auto-commit, on
/// revocation, on flush and on close).
fn store_commits(consumer: &BaseConsumer<MemberContext>, shared: &Shared, kafka_topic: &str) {
    let commits = std::mem::take(&mut shared.lock().commits);
    let offsets = commits.iter().map(|(partition, offset)| (kafka_topic, *partition as i32, *offset));
    client::store_offsets(consumer, offsets, &format_args!("topic '{kafka_topic}'"));
}

/// The thread that drives one consumer.
struct Worker {
    consumer: BaseConsumer<MemberContext>,
    shared: Arc<Shared>,
    kafka_topic: String,
    topic: String,
    reader_partition: Option<u32>,
    request_timeout: Duration,
}

impl Worker {
    fn run(self) {
        let mut paused = false;
        let mut last_error: Option<(String, Instant)> = None;
        while !self.shared.stop.load(Ordering::Acquire) {
            self.service();
            paused = self.backpressure(paused);
            match self.consumer.poll(POLL_INTERVAL) {
                None => {}
                Some(Ok(message)) => self.hand_over(&message),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(error)) => self.consumer_error(&error, &mut last_error),
            }
        }
        self.close();
    }

    /// Applies what the subscription asked for: commits, seeks, flushes.
    fn service(&self) {
        if self.shared.group {
            store_commits(&self.consumer, &self.shared, &self.kafka_topic);
        }
        let seeks = std::mem::take(&mut self.shared.lock().seeks);
        for (partition, offset, epoch) in seeks {
            let sought = match self.reader_partition {
                // A reader re-assigns its partition: that always starts fetching there.
                Some(_) => {
                    let mut assignment = TopicPartitionList::new();
                    assignment
                        .add_partition_offset(&self.kafka_topic, partition as i32, Offset::Offset(offset))
                        .and_then(|()| self.consumer.assign(&assignment))
                }
                None => self.consumer.seek(
                    &self.kafka_topic,
                    partition as i32,
                    Offset::Offset(offset),
                    self.request_timeout,
                ),
            };
            if let Err(error) = sought {
                tracing::warn!(topic = %self.topic, partition, offset, %error, "seek failed");
            }
            // Never backwards: a revocation since the seek started a later epoch already.
            let mut state = self.shared.lock();
            let stamp = state.stamps.entry(partition).or_default();
            *stamp = (*stamp).max(epoch);
        }
        let flushes = std::mem::take(&mut self.shared.lock().flushes);
        if !flushes.is_empty() {
            let committed = if self.shared.group {
                client::commit_stored(&self.consumer, &format_args!("topic '{}'", self.kafka_topic))
            } else {
                Ok(())
            };
            for flush in flushes {
                let _ = flush.send(committed.clone());
            }
        }
    }

    /// Pauses fetching while the buffer is full, resumes once it has drained to half. Returns
    /// whether fetching is paused.
    fn backpressure(&self, paused: bool) -> bool {
        let buffered = {
            let state = self.shared.lock();
            (state.buffer.len(), state.buffered_bytes)
        };
        client::backpressure(&self.consumer, buffered, paused, &format_args!("topic '{}'", self.topic))
    }

    fn hand_over(&self, message: &BorrowedMessage<'_>) {
        let position = Position { partition: message.partition() as u32, offset: message.offset() as u64 };
        let timestamp_ms = message.timestamp().to_millis().filter(|ms| *ms > 0).unwrap_or_else(|| now_ms() as i64);
        let bytes = message.payload_len() + 256;
        let read = decode(message).map(|event| LogEvent { position, timestamp_ms, event: Arc::new(event) });
        {
            let mut state = self.shared.lock();
            let epoch = state.stamps.get(&position.partition).copied().unwrap_or(0);
            state.buffered_bytes += bytes;
            state.buffer.push_back(Item { epoch, position, bytes, read });
        }
        self.shared.wake.notify_one();
    }

    fn consumer_error(&self, error: &KafkaError, last_error: &mut Option<(String, Instant)>) {
        if client::is_unknown_topic(error) {
            // Also reported while a topic is being created; only a topic that is gone ends
            // the subscription.
            if let Ok(None) = client::partition_count(&self.consumer, &self.kafka_topic, self.request_timeout) {
                self.shared.lock().fatal = Some(Fatal::UnknownTopic);
                self.shared.wake.notify_one();
                return;
            }
        }
        if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
            self.shared.lock().fatal =
                Some(Fatal::Failed(format!("kafka consumer of topic '{}' failed: {error}", self.topic)));
            self.shared.wake.notify_one();
            return;
        }
        if client::say_again(last_error, error) {
            tracing::warn!(topic = %self.topic, %error, "reading the topic");
        }
    }

    /// Final commit, then leave the group (dropping the consumer does) and say so.
    fn close(self) {
        let committed = if self.shared.group {
            store_commits(&self.consumer, &self.shared, &self.kafka_topic);
            client::commit_stored(&self.consumer, &format_args!("topic '{}'", self.kafka_topic))
        } else {
            Ok(())
        };
        drop(self.consumer);
        let flushes = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.buffer.clear();
            state.buffered_bytes = 0;
            std::mem::take(&mut state.flushes)
        };
        for flush in flushes {
            let _ = flush.send(committed.clone());
        }
        self.shared.wake.notify_one();
    }
}

/// The event a record carries, or why it carries none.
fn decode(message: &BorrowedMessage<'_>) -> Result<switchyard_event::Event, String> {
    // Any producer can write to the topic: a header whose name is not UTF-8 makes the record
    // corrupt, not a reason to stop.
    let (headers, skipped) = client::headers(message);
    if skipped {
        return Err("a header name is not valid utf-8".to_owned());
    }
    let value = message.payload().map(Bytes::copy_from_slice);
    kafka::decode(headers, message.key(), value).map_err(|e| e.to_string())
}
