//! Readers of a broker topic, on the consumer core (`consumer.rs`): a consumer-group member
//! (`subscribe`) or an assign-only reader of one partition (`reader`). What is theirs: records
//! decoded into events (a record that is not one comes out as `LogEvent::undecodable`, to be
//! moved aside), seeks, `flush` of every live member's commits, and the check that the group exists.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_event::kafka;
use switchyard_log::{LogError, LogEvent, Position, Subscription};
use tokio::sync::oneshot;

use crate::client::{self, kafka_offset, kafka_partition, now_ms, Context};
use crate::consumer::{self, Buffered, Handle, Kind, Member, Partition, Shared, State};

/// How long a flush waits for one subscription's commit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Every live subscription of a log, so that `flush` can commit them all.
#[derive(Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Shared<Events>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    fn add(&self, shared: &Arc<Shared<Events>>) -> u64 {
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
        let subscriptions: Vec<Arc<Shared<Events>>> = lock(&self.live).values().cloned().collect();
        let mut waiting = Vec::new();
        for shared in subscriptions {
            let mut state = shared.lock();
            if !state.closed && shared.commits {
                let (tx, rx) = oneshot::channel();
                state.own.flushes.push(tx);
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

/// The log's kind of consumer: the events of one broker topic.
pub(crate) struct Events {
    kafka_topic: String,
    /// The log topic, for messages.
    topic: String,
    /// An assign-only reader rather than a group member.
    reader: bool,
    request_timeout: Duration,
}

/// What a subscription and its thread share beyond the core.
#[derive(Default)]
pub(crate) struct Reading {
    /// Per partition, the epoch records must carry to be returned: a seek or a revocation
    /// starts a new one, so that records read before it are dropped.
    epochs: HashMap<u32, u64>,
    /// Per partition, the epoch the thread stamps on what it reads now (it catches up with
    /// `epochs` when it applies a seek).
    stamps: HashMap<u32, u64>,
    /// Per partition, the offset the next returned record will have, when known.
    positions: HashMap<u32, u64>,
    /// Seeks for the thread to apply: partition, offset, epoch.
    seeks: Vec<(u32, i64, u64)>,
    /// Flushes waiting for the thread's synchronous commit.
    flushes: Vec<oneshot::Sender<Result<(), String>>>,
    /// The subscription cannot go on.
    fatal: Option<Fatal>,
}

enum Fatal {
    /// The topic was deleted.
    UnknownTopic,
    /// The consumer failed for good.
    Failed(String),
}

/// A record read by the thread.
pub(crate) struct Item {
    epoch: u64,
    position: Position,
    read: LogEvent,
}

impl Kind for Events {
    type Item = Item;
    type State = Reading;

    fn read(&mut self, shared: &Shared<Events>, message: &BorrowedMessage<'_>) -> (Item, usize) {
        let position = Position { partition: message.partition() as u32, offset: message.offset() as u64 };
        let timestamp_ms = message.timestamp().to_millis().filter(|ms| *ms > 0).unwrap_or_else(|| now_ms() as i64);
        let read = match decode(message) {
            Ok(event) => LogEvent::new(position, timestamp_ms, Arc::new(event)),
            // Any producer can write to the topic: a record that is not an event is moved aside
            // by the reader's owner, not a reason to stop reading.
            Err(reason) => {
                let record = message.payload().map(Bytes::copy_from_slice).unwrap_or_default();
                LogEvent::undecodable(&self.topic, position, timestamp_ms, record, reason)
            }
        };
        // Stamps change only on this thread (seeks it applies, revocations it serves).
        let epoch = shared.lock().own.stamps.get(&position.partition).copied().unwrap_or(0);
        (Item { epoch, position, read }, message.payload_len() + 256)
    }

    /// Applies the seeks and flushes the subscription asked for.
    fn service(&mut self, consumer: &BaseConsumer<Member<Events>>, shared: &Shared<Events>) {
        let seeks = std::mem::take(&mut shared.lock().own.seeks);
        for (partition, offset, epoch) in seeks {
            let sought = if self.reader {
                // A reader re-assigns its partition: that always starts fetching there.
                let mut assignment = TopicPartitionList::new();
                assignment
                    .add_partition_offset(&self.kafka_topic, partition as i32, Offset::Offset(offset))
                    .and_then(|()| consumer.assign(&assignment))
            } else {
                consumer.seek(&self.kafka_topic, partition as i32, Offset::Offset(offset), self.request_timeout)
            };
            if let Err(error) = sought {
                tracing::warn!(topic = %self.topic, partition, offset, %error, "seek failed");
            }
            // Never backwards: a revocation since the seek started a later epoch already.
            let mut state = shared.lock();
            let stamp = state.own.stamps.entry(partition).or_default();
            *stamp = (*stamp).max(epoch);
        }
        let flushes = std::mem::take(&mut shared.lock().own.flushes);
        if !flushes.is_empty() {
            let committed = if shared.commits { consumer::commit_stored(consumer, &shared.what) } else { Ok(()) };
            for flush in flushes {
                let _ = flush.send(committed.clone());
            }
        }
    }

    fn failed(&mut self, consumer: &BaseConsumer<Member<Events>>, shared: &Shared<Events>, error: &KafkaError) -> bool {
        let fatal = if client::is_unknown_topic(error)
            // Also reported while a topic is being created; only a topic that is gone ends the
            // subscription.
            && matches!(client::partition_count(consumer, &self.kafka_topic, self.request_timeout), Ok(None))
        {
            Fatal::UnknownTopic
        } else if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
            Fatal::Failed(format!("kafka consumer of topic '{}' failed: {error}", self.topic))
        } else {
            return true;
        };
        shared.lock().own.fatal = Some(fatal);
        shared.wake();
        false
    }

    fn revoked(state: &mut State<Events>, partitions: &std::collections::BTreeSet<Partition>) {
        let own = &mut state.own;
        for &(_, partition) in partitions {
            let partition = partition as u32;
            own.positions.remove(&partition);
            // Seeks asked for before the revocation are void as well.
            let wanted = own.epochs.get(&partition).copied().unwrap_or(0);
            let stamped = own.stamps.get(&partition).copied().unwrap_or(0);
            let epoch = wanted.max(stamped) + 1;
            own.epochs.insert(partition, epoch);
            own.stamps.insert(partition, epoch);
        }
    }

    fn closed(&mut self, state: &mut State<Events>, committed: &Result<(), String>) {
        for flush in state.own.flushes.drain(..) {
            let _ = flush.send(committed.clone());
        }
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

/// A subscription or reader of one topic.
pub(crate) struct KafkaSubscription {
    handle: Handle<Events>,
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

/// The core's name for `partition` of the only topic, if Kafka can hold it.
fn key(partition: u32) -> Option<Partition> {
    i32::try_from(partition).ok().map(|partition| (0, partition))
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
        let shared =
            Shared::<Events>::new(vec![start.kafka_topic.clone()], true, format!("topic '{}'", start.kafka_topic));
        let consumer: BaseConsumer<Member<Events>> =
            client::create(&start.config, Member::new(start.context.clone(), &shared))?;
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
        spawn(consumer, &shared, start, None, registry)
    }

    /// An assign-only reader of `partition` from `offset`. Blocking.
    pub(crate) fn reader(
        start: Start,
        partition: u32,
        offset: u64,
        registry: &Arc<Registry>,
    ) -> Result<KafkaSubscription, LogError> {
        let kafka_partition = kafka_partition(partition)?;
        let shared =
            Shared::<Events>::new(vec![start.kafka_topic.clone()], false, format!("topic '{}'", start.kafka_topic));
        {
            let mut state = shared.lock();
            state.assigned.insert((0, kafka_partition));
            state.own.positions.insert(partition, offset);
        }
        let consumer: BaseConsumer<Member<Events>> =
            client::create(&start.config, Member::new(start.context.clone(), &shared))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&start.kafka_topic, kafka_partition, Offset::Offset(kafka_offset(offset)?))
            .and_then(|()| consumer.assign(&assignment))
            .map_err(|e| client::unavailable(format!("cannot read topic '{}'", start.topic), &e))?;
        spawn(consumer, &shared, start, Some(partition), registry)
    }
}

fn spawn(
    consumer: BaseConsumer<Member<Events>>,
    shared: &Arc<Shared<Events>>,
    start: Start,
    reader_partition: Option<u32>,
    registry: &Arc<Registry>,
) -> Result<KafkaSubscription, LogError> {
    let events = Events {
        kafka_topic: start.kafka_topic,
        topic: start.topic.clone(),
        reader: reader_partition.is_some(),
        request_timeout: start.request_timeout,
    };
    let id = registry.add(shared);
    let ended = {
        let registry = Arc::clone(registry);
        move |_| registry.remove(id)
    };
    match consumer::spawn(consumer, events, "kafka-consumer", ended) {
        Ok(handle) => Ok(KafkaSubscription { handle, topic: start.topic, reader_partition }),
        Err(error) => {
            registry.remove(id);
            Err(error)
        }
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<LogEvent>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let topic = &self.topic;
        self.handle
            .next(|state| {
                let mut batch = Vec::new();
                while batch.len() < max {
                    let Some(buffered) = state.pop() else { break };
                    let Buffered { item: Item { epoch, position, read }, .. } = buffered;
                    if epoch != state.own.epochs.get(&position.partition).copied().unwrap_or(0) {
                        continue; // read before a seek
                    }
                    state.own.positions.insert(position.partition, position.offset + 1);
                    batch.push(read);
                }
                if !batch.is_empty() {
                    return ControlFlow::Break(Ok(batch));
                }
                match &state.own.fatal {
                    Some(Fatal::UnknownTopic) => ControlFlow::Break(Err(LogError::UnknownTopic(topic.clone()))),
                    Some(Fatal::Failed(reason)) => ControlFlow::Break(Err(LogError::Unavailable(reason.clone()))),
                    None if state.closed => ControlFlow::Break(Err(LogError::Closed)),
                    None => ControlFlow::Continue(None),
                }
            })
            .await
    }

    fn commit(&mut self, partition: u32, next_offset: u64) -> Result<(), LogError> {
        if !self.handle.shared().commits {
            return Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a reader of topic '{}' without a group cannot commit", self.topic),
            )));
        }
        let offset = kafka_offset(next_offset)?;
        if !key(partition).is_some_and(|key| self.handle.commit(key, offset)) {
            tracing::debug!(topic = %self.topic, partition, next_offset, "commit for a partition not assigned; ignored");
        }
        Ok(())
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), LogError> {
        let kafka_offset = kafka_offset(offset)?;
        let mut state = self.handle.shared().lock();
        let readable = match self.reader_partition {
            Some(only) => only == partition,
            None => key(partition).is_some_and(|key| state.assigned.contains(&key)),
        };
        if !readable {
            return Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("partition {partition} of topic '{}' is not read by this subscription", self.topic),
            )));
        }
        let own = &mut state.own;
        let epoch = own.epochs.get(&partition).copied().unwrap_or(0) + 1;
        own.epochs.insert(partition, epoch);
        own.positions.insert(partition, offset);
        own.seeks.push((partition, kafka_offset, epoch));
        Ok(())
    }

    fn position(&self, partition: u32) -> Option<u64> {
        let state = self.handle.shared().lock();
        let assigned = key(partition).is_some_and(|key| state.assigned.contains(&key));
        assigned.then(|| state.own.positions.get(&partition).copied()).flatten()
    }
}
