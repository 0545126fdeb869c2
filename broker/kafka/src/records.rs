//! A consumer-group member of any Kafka cluster's topics, reading plain records: what a
//! KafkaSource reads (Knative's `bootstrapServers`, `topics`, `consumerGroup`, `initialOffset`).
//!
//! Built like the log's subscriptions (`subscription.rs`): one thread per consumer polls all
//! the time, so that rebalances are served even while the caller is slow, and hands records
//! over through a bounded buffer (fetching pauses while it is full). What the thread finds
//! wrong (a topic missing, the cluster unreachable) is a report for the caller, not the end:
//! the consumer keeps going, and records flow again once the cause is gone.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use switchyard_log::LogError;
use tokio::sync::{oneshot, Notify};

use crate::client::{self, blocking, Context};
use crate::config::KafkaConfig;

/// How long one poll waits: the latency of commits handed to the thread and of stopping
/// (records themselves are handed over as soon as they arrive).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A problem that lasts is reported again after this long: a caller that calls `next_batch`
/// again at once after an error waits this long for the next answer instead of spinning.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the thread looks the subscribed topics up while a problem lasts (to see it end)…
const CHECK_WHILE_FAILING: Duration = Duration::from_secs(1);
/// …and while none does: librdkafka reports a missing topic only once, and an unreachable
/// cluster only through logs, so the thread looks for itself.
const CHECK_WHILE_HEALTHY: Duration = Duration::from_secs(10);
/// The bound on one look-up. The thread does not poll meanwhile, which matters only while the
/// cluster does not answer (and then there are no rebalances to serve).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// What a buffered record costs beyond its key, value and headers.
const RECORD_OVERHEAD: usize = 256;

/// Settings of a [`RecordConsumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConsumerConfig {
    /// `host:port[,host:port…]`, librdkafka's `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The consumer group id, used as given (no prefix): members with the same group share the
    /// partitions and its committed offsets.
    pub group: String,
    /// The topics to read, by name (not patterns).
    pub topics: Vec<String>,
    /// Where a group with no committed offset on a partition starts.
    pub initial_offset: InitialOffset,
    /// librdkafka's `client.id`, visible in broker logs and quotas.
    pub client_id: String,
    /// How long `connect` waits for the cluster to answer (default 5 s).
    pub connect_timeout: Duration,
    /// Extra librdkafka properties, applied last (for example `session.timeout.ms`). This
    /// build of librdkafka has no TLS or SASL.
    pub properties: Vec<(String, String)>,
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

/// Where a group with no committed offset on a partition starts reading (librdkafka's
/// `auto.offset.reset`). It also applies when the committed offset fell out of retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialOffset {
    /// At the oldest record still in the partition.
    Earliest,
    /// At the end: only records produced after the member got the partition.
    #[default]
    Latest,
}

impl InitialOffset {
    fn auto_offset_reset(self) -> &'static str {
        match self {
            InitialOffset::Earliest => "earliest",
            InitialOffset::Latest => "latest",
        }
    }
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

/// A member of a consumer group on any Kafka cluster, reading records.
///
/// - **Reading**: [`next_batch`](RecordConsumer::next_batch) returns what has arrived, in
///   order per partition. A record is read by one member of the group at a time.
/// - **Committing**: [`commit`](RecordConsumer::commit) marks the records of a partition
///   below an offset as done. Done offsets are committed to the group within about a second,
///   synchronously when the partition is revoked, and at [`close`](RecordConsumer::close).
///   Nothing is committed that was not marked done: after a crash or a rebalance, the next
///   owner of a partition resumes at its last commit (at-least-once; records in flight are
///   read again).
/// - **Rebalances** are served by the consumer's own thread whenever they happen. Buffered
///   records of a revoked partition are dropped (the next owner reads them), and later commits
///   for it are ignored.
/// - **Problems** (a subscribed topic missing, the cluster unreachable) are errors of
///   `next_batch`, repeated at most once a second while they last; the consumer keeps going.
pub struct RecordConsumer {
    shared: Arc<Shared>,
    group: String,
    /// The last problem `next_batch` reported (its sequence number) and when.
    reported: Option<(u64, Instant)>,
    /// The thread's outcome: whether its final commit succeeded.
    finished: Option<oneshot::Receiver<Result<(), String>>>,
}

impl std::fmt::Debug for RecordConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordConsumer").field("group", &self.group).finish_non_exhaustive()
    }
}

/// What the consumer and its thread share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes `next_batch` when records arrive or the problem changes.
    wake: Notify,
    /// Set when the consumer is closed or dropped: the thread commits, leaves and ends.
    stop: AtomicBool,
    /// librdkafka reported something that may be a problem: look the topics up soon.
    check_soon: AtomicBool,
    /// The thread made its final commit: the revocation that closing the consumer brings has
    /// nothing left to commit.
    committed_final: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the current problem; a change is reported to the caller at once.
    fn set_problem(&self, problem: Option<Problem>, group: &str) {
        {
            let mut state = self.lock();
            if state.problem == problem {
                return;
            }
            match &problem {
                Some(problem) => tracing::warn!(group, %problem, "kafka source consumer cannot read"),
                None => tracing::info!(group, "kafka source consumer reads again"),
            }
            state.problem = problem;
            state.problem_seq += 1;
        }
        self.wake.notify_one();
    }
}

#[derive(Default)]
struct State {
    /// Records read and not yet returned, with what each costs.
    buffer: VecDeque<(Record, usize)>,
    buffered_bytes: usize,
    /// The partitions this member owns.
    assigned: BTreeSet<(String, i32)>,
    /// Commits for the thread to store.
    commits: BTreeMap<(String, i32), i64>,
    /// What keeps records from flowing now, if anything.
    problem: Option<Problem>,
    /// Counts the changes of `problem`.
    problem_seq: u64,
    /// The thread has ended.
    closed: bool,
}

/// What keeps records from flowing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// A subscribed topic does not exist.
    UnknownTopic(String),
    /// The cluster does not answer, or the consumer failed.
    Unavailable(String),
}

impl Problem {
    fn error(&self) -> LogError {
        match self {
            Problem::UnknownTopic(topic) => LogError::UnknownTopic(topic.clone()),
            Problem::Unavailable(reason) => LogError::Unavailable(reason.clone()),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error().fmt(f)
    }
}

fn invalid(reason: String) -> LogError {
    LogError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, reason))
}

/// Whether `topic` is a name Kafka accepts (and not a librdkafka pattern, which starts with
/// `^`): up to 249 ASCII letters, digits, `.`, `_` and `-`, not `.` or `..`.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RecordConsumer {
    /// Joins the group and subscribes to the topics. Fails with `LogError::Unavailable`,
    /// naming the address, when the cluster does not answer a metadata request within
    /// [`RecordConsumerConfig::connect_timeout`]; with an `InvalidInput` I/O error for an empty
    /// group or topic list or a name Kafka cannot hold. A topic that does not exist is no
    /// reason to fail: `next_batch` reports it until it does.
    pub async fn connect(config: RecordConsumerConfig) -> Result<RecordConsumer, LogError> {
        if config.group.is_empty() {
            return Err(invalid("a kafka source consumer needs a consumer group".to_owned()));
        }
        if config.topics.is_empty() {
            return Err(invalid(format!("consumer group '{}' is given no topic to read", config.group)));
        }
        if let Some(topic) = config.topics.iter().find(|topic| !valid_topic_name(topic)) {
            return Err(invalid(format!("'{topic}' is not a valid kafka topic name")));
        }
        let kafka = KafkaConfig {
            bootstrap_servers: config.bootstrap_servers.clone(),
            client_id: config.client_id.clone(),
            connect_timeout: config.connect_timeout,
            properties: config.properties.clone(),
            ..KafkaConfig::new(config.bootstrap_servers.as_str())
        };
        let shared = Arc::new(Shared::default());
        let context =
            RecordContext { base: Context::new(&kafka), shared: Arc::clone(&shared), group: config.group.clone() };
        let consumer: BaseConsumer<RecordContext> =
            client::create(&kafka.record_consumer(&config.group, config.initial_offset.auto_offset_reset()), context)?;
        let mut topics = config.topics.clone();
        topics.sort();
        topics.dedup();
        let (bootstrap, timeout, group) =
            (config.bootstrap_servers.clone(), config.connect_timeout, config.group.clone());
        let (consumer, topics, problem) = blocking(move || {
            consumer.fetch_metadata(None, timeout).map_err(|e| client::unreachable(&kafka, &e))?;
            // What `next_batch` reports from the start, until the thread's first look-up.
            let problem = first_problem(&consumer, &topics, &bootstrap, timeout);
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&names)
                .map_err(|e| invalid(format!("cannot subscribe group '{group}' to topics {topics:?}: {e}")))?;
            Ok::<_, LogError>((consumer, topics, problem))
        })
        .await??;
        shared.set_problem(problem, &config.group);
        let (finish, finished) = oneshot::channel();
        let worker = Worker {
            consumer,
            shared: Arc::clone(&shared),
            group: config.group.clone(),
            bootstrap: config.bootstrap_servers.clone(),
            topics,
            fatal: None,
        };
        std::thread::Builder::new()
            .name("kafka-records".to_owned())
            .spawn(move || {
                let committed = worker.run();
                let _ = finish.send(committed);
            })
            .map_err(LogError::Io)?;
        Ok(RecordConsumer { shared, group: config.group, reported: None, finished: Some(finished) })
    }

    /// Waits for at least one record and returns up to `max` (none when `max` is 0), in order
    /// per partition.
    ///
    /// Cancel-safe: dropping the future before it completes loses no record.
    ///
    /// Errors are reports, not the end: `LogError::UnknownTopic` while a subscribed topic does
    /// not exist, `LogError::Unavailable` while the cluster does not answer (or the consumer
    /// failed for good). The consumer keeps going; a later call returns records once they flow.
    /// Records already read are returned before any error. A problem that lasts is reported
    /// again after a second, not sooner, so a caller that retries at once in a loop is paced
    /// (a change of problem is reported at once).
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>, LogError> {
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
            let report_again_at = {
                let mut guard = self.shared.lock();
                let state = &mut *guard;
                if !state.buffer.is_empty() {
                    let count = max.min(state.buffer.len());
                    let mut batch = Vec::with_capacity(count);
                    for (record, bytes) in state.buffer.drain(..count) {
                        state.buffered_bytes -= bytes;
                        batch.push(record);
                    }
                    return Ok(batch);
                }
                match &state.problem {
                    Some(problem) => match self.reported {
                        Some((seq, at)) if seq == state.problem_seq && at.elapsed() < REPORT_INTERVAL => {
                            Some(at + REPORT_INTERVAL)
                        }
                        _ => {
                            self.reported = Some((state.problem_seq, Instant::now()));
                            return Err(problem.error());
                        }
                    },
                    None if state.closed => return Err(LogError::Closed),
                    None => None,
                }
            };
            match report_again_at {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// Marks the records of `partition` of `topic` below `next_offset` as done: the offset is
    /// stored at once, committed to the group within about a second (auto-commit), when the
    /// partition is revoked, and at close. A commit for a partition this member does not own
    /// (any more) is ignored: its next owner resumes from the group's last commit. Fails only
    /// for a negative offset.
    pub fn commit(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<(), LogError> {
        if next_offset < 0 {
            return Err(invalid(format!(
                "offset {next_offset} of partition {partition} of topic '{topic}' is negative"
            )));
        }
        let key = (topic.to_owned(), partition);
        let mut state = self.shared.lock();
        if state.assigned.contains(&key) {
            state.commits.insert(key, next_offset);
        } else {
            tracing::debug!(group = %self.group, topic, partition, next_offset, "commit for a partition not owned; ignored");
        }
        Ok(())
    }

    /// The partitions this member owns now, as (topic, partition), sorted.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.shared.lock().assigned.iter().cloned().collect()
    }

    /// Commits what was marked done, synchronously, and leaves the group; returns once both
    /// are done. `Err(LogError::Unavailable)` when the final commit failed (the records since
    /// the last successful commit will be read again by the group).
    ///
    /// While Kafka is unreachable this takes about 12 s (the commit and the leave each wait
    /// about 6 s for the group coordinator) and then fails. A caller that cannot wait can put
    /// a timeout on it: dropping the future lets the thread finish in the background.
    pub async fn close(mut self) -> Result<(), LogError> {
        self.shared.stop.store(true, Ordering::Release);
        let Some(finished) = self.finished.take() else { return Ok(()) };
        match finished.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(LogError::Unavailable(reason)),
            Err(_) => Err(LogError::Unavailable(format!(
                "the consumer of group '{}' ended without its final commit",
                self.group
            ))),
        }
    }
}

impl Drop for RecordConsumer {
    fn drop(&mut self) {
        // The thread stores the last commits, commits them, leaves the group and ends.
        self.shared.stop.store(true, Ordering::Release);
    }
}

/// The consumer's context: logs go to `tracing`, rebalances update the shared state, and
/// errors that may mean a problem ask for a look-up.
struct RecordContext {
    base: Context,
    shared: Arc<Shared>,
    group: String,
}

impl ClientContext for RecordContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.base.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if client::is_transient(&error) || client::is_unknown_topic(&error) {
            self.shared.check_soon.store(true, Ordering::Release);
        }
        self.base.error(error, reason);
    }
}

impl ConsumerContext for RecordContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                // Commit what the caller marked done before the partitions go: the next owner
                // resumes there rather than at the last auto-commit. A failure is logged; the
                // partitions go either way, and their next owner resumes from the last commit
                // that succeeded. A lost assignment (the session expired) can no longer commit.
                let lost = consumer.assignment_lost();
                if lost {
                    tracing::warn!(group = %self.group, "session expired; partitions lost without a commit");
                } else if !self.shared.committed_final.load(Ordering::Acquire) {
                    store_commits(consumer, &self.shared, &self.group);
                    let _ = client::commit_stored(consumer, &format_args!("group '{}'", self.group));
                }
                let elements = revoked.elements();
                let gone: HashSet<(&str, i32)> = elements.iter().map(|e| (e.topic(), e.partition())).collect();
                let mut guard = self.shared.lock();
                let state = &mut *guard;
                for (topic, partition) in &gone {
                    let key = ((*topic).to_owned(), *partition);
                    state.assigned.remove(&key);
                    state.commits.remove(&key);
                }
                // Records of the partitions still buffered are dropped: the next owner reads
                // them. (The thread alone buffers records and serves rebalances, so none read
                // before the revocation can arrive after it.)
                let mut dropped = 0;
                state.buffer.retain(|(record, bytes)| {
                    let keep = !gone.contains(&(record.topic.as_str(), record.partition));
                    if !keep {
                        dropped += bytes;
                    }
                    keep
                });
                state.buffered_bytes -= dropped;
                tracing::info!(group = %self.group, revoked = ?gone, assigned = ?state.assigned, "partitions revoked");
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => tracing::warn!(group = %self.group, %error, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let mut state = self.shared.lock();
            for element in assigned.elements() {
                state.assigned.insert((element.topic().to_owned(), element.partition()));
            }
            tracing::info!(group = %self.group, assigned = ?state.assigned, "partitions assigned");
        }
    }
}

/// Hands the caller's commits to librdkafka's offset store.
fn store_commits(consumer: &BaseConsumer<RecordContext>, shared: &Shared, group: &str) {
    let commits = std::mem::take(&mut shared.lock().commits);
    let offsets = commits.iter().map(|((topic, partition), offset)| (topic.as_str(), *partition, *offset));
    client::store_offsets(consumer, offsets, &format_args!("group '{group}'"));
}

/// What keeps records of `topics` from flowing, as far as the cluster's metadata tells: the
/// cluster not answering comes first, then the first topic missing.
fn first_problem<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
    bootstrap: &str,
    timeout: Duration,
) -> Option<Problem> {
    let mut problem = None;
    for topic in topics {
        match client::partition_count(consumer, topic, timeout) {
            Ok(Some(_)) => {}
            Ok(None) => {
                problem.get_or_insert_with(|| Problem::UnknownTopic(topic.clone()));
            }
            Err(error) => {
                return Some(Problem::Unavailable(format!(
                    "cannot look up topic '{topic}' at kafka '{bootstrap}': {error}"
                )))
            }
        }
    }
    problem
}

/// The thread that drives one consumer.
struct Worker {
    consumer: BaseConsumer<RecordContext>,
    shared: Arc<Shared>,
    group: String,
    bootstrap: String,
    /// The subscribed topics.
    topics: Vec<String>,
    /// Why the consumer cannot go on, once librdkafka said so.
    fatal: Option<String>,
}

impl Worker {
    /// Reads until stopped, then closes; returns whether the final commit succeeded.
    fn run(mut self) -> Result<(), String> {
        let mut paused = false;
        let mut last_error: Option<(String, Instant)> = None;
        let mut last_check = Instant::now();
        while !self.shared.stop.load(Ordering::Acquire) {
            store_commits(&self.consumer, &self.shared, &self.group);
            let buffered = {
                let state = self.shared.lock();
                (state.buffer.len(), state.buffered_bytes)
            };
            paused = client::backpressure(&self.consumer, buffered, paused, &format_args!("group '{}'", self.group));
            let every = if self.shared.lock().problem.is_some() { CHECK_WHILE_FAILING } else { CHECK_WHILE_HEALTHY };
            let soon = self.shared.check_soon.load(Ordering::Acquire);
            if last_check.elapsed() >= every || (soon && last_check.elapsed() >= CHECK_WHILE_FAILING) {
                self.shared.check_soon.store(false, Ordering::Release);
                self.check();
                last_check = Instant::now();
            }
            match self.consumer.poll(POLL_INTERVAL) {
                None => {}
                Some(Ok(message)) => self.hand_over(&message),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(error)) => self.consumer_error(&error, &mut last_error),
            }
        }
        self.close()
    }

    /// Looks the subscribed topics up and sets the problem accordingly.
    fn check(&mut self) {
        // librdkafka itself looks for subscribed topics that are missing (about every second)
        // and joins them once they exist: this only tells the caller.
        let mut problem = first_problem(&self.consumer, &self.topics, &self.bootstrap, CHECK_TIMEOUT);
        if let Some(reason) = &self.fatal {
            problem = Some(Problem::Unavailable(reason.clone()));
        }
        self.shared.set_problem(problem, &self.group);
    }

    fn hand_over(&self, message: &BorrowedMessage<'_>) {
        let (headers, skipped) = client::headers(message);
        if skipped {
            tracing::debug!(
                group = %self.group,
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                "left out a header whose name is not utf-8"
            );
        }
        let headers: Vec<(String, Option<Vec<u8>>)> =
            headers.into_iter().map(|(name, value)| (name.to_owned(), value.map(<[u8]>::to_vec))).collect();
        let bytes = RECORD_OVERHEAD
            + message.payload_len()
            + message.key().map_or(0, <[u8]>::len)
            + headers.iter().map(|(name, value)| name.len() + value.as_ref().map_or(0, Vec::len)).sum::<usize>();
        let record = Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis().filter(|ms| *ms >= 0),
            key: message.key().map(<[u8]>::to_vec),
            headers,
            value: message.payload().map(Bytes::copy_from_slice),
        };
        {
            let mut state = self.shared.lock();
            state.buffered_bytes += bytes;
            state.buffer.push_back((record, bytes));
        }
        self.shared.wake.notify_one();
    }

    fn consumer_error(&mut self, error: &KafkaError, last_error: &mut Option<(String, Instant)>) {
        if let KafkaError::MessageConsumptionFatal(_) = error {
            tracing::error!(group = %self.group, %error, "kafka source consumer failed for good");
            self.fatal = Some(format!("the kafka consumer of group '{}' failed: {error}", self.group));
            self.check();
            return;
        }
        // A missing topic is reported here (once); the look-up tells whether it still is.
        self.shared.check_soon.store(true, Ordering::Release);
        let known = matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::UnknownTopicOrPartition));
        if !known && client::say_again(last_error, error) {
            tracing::warn!(group = %self.group, %error, "reading the topics");
        }
    }

    /// Final commit, then leave the group (dropping the consumer does).
    fn close(self) -> Result<(), String> {
        store_commits(&self.consumer, &self.shared, &self.group);
        let committed = client::commit_stored(&self.consumer, &format_args!("group '{}'", self.group));
        self.shared.committed_final.store(true, Ordering::Release);
        drop(self.consumer);
        {
            let mut state = self.shared.lock();
            state.closed = true;
            state.buffer.clear();
            state.buffered_bytes = 0;
            state.assigned.clear();
        }
        self.shared.wake.notify_one();
        committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        for good in ["orders", "a.b-c_d", &"x".repeat(249)] {
            assert!(valid_topic_name(good), "{good}");
        }
        for bad in ["", ".", "..", "^orders.*", "a b", "ä", &"x".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn bad_settings_are_refused_before_connecting() {
        let cases = [
            (RecordConsumerConfig::new("127.0.0.1:1", "", vec!["t".to_owned()]), "needs a consumer group"),
            (RecordConsumerConfig::new("127.0.0.1:1", "g", Vec::new()), "group 'g' is given no topic"),
            (RecordConsumerConfig::new("127.0.0.1:1", "g", vec!["^t.*".to_owned()]), "'^t.*' is not a valid"),
        ];
        for (config, expected) in cases {
            let error = RecordConsumer::connect(config).await.unwrap_err();
            assert!(matches!(&error, LogError::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput), "{error:?}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
