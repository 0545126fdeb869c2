//! One thread per librdkafka consumer, and what it shares with the async reader of its records:
//! the core of the log's subscriptions and readers (`subscription.rs`) and of the sources'
//! record consumers (`records.rs`), each a [`Kind`] of consumer.
//!
//! Why a thread rather than polling from `next_batch`: a consumer must be polled to take part in
//! rebalances, and a reader that stops reading (a dispatcher whose window is full while a
//! subscriber is slow) would otherwise hold up every rebalance of its group and be expelled
//! after `max.poll.interval.ms`. The thread polls all the time and hands records over through a
//! bounded buffer; when the buffer is full it pauses fetching, but keeps polling.
//!
//! - **Commits**: the reader stores what is done ([`Handle::commit`]); the thread hands it to
//!   librdkafka's offset store on its next round. Stored offsets are committed every second
//!   (auto-commit), synchronously when partitions are revoked, and at close; nothing else is.
//! - **Revocation** drops the buffered records and the stored commits of the partitions that
//!   go: their next owner reads them again from the group's last commit.
//! - **Closing**: dropping the [`Handle`] stops the thread, which commits what is stored, leaves
//!   the group (dropping the consumer does), marks the state closed and wakes the reader.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Display;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_log::LogError;
use tokio::sync::Notify;

use crate::client::{self, Context};

/// How long one poll waits: the latency of what the reader hands to the thread (commits, seeks,
/// flushes) and of stopping. Records themselves are handed over as soon as they arrive.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Fetching pauses while this many records, or bytes, wait in the buffer, and resumes below half
/// of both. With the reader taking up to a few hundred at a time, this keeps it fed, while a
/// reader that stalls holds at most this (plus librdkafka's prefetch, see
/// `KafkaConfig::group_member`) in memory: its backlog stays in Kafka.
const BUFFER_RECORDS: usize = 1024;
/// See [`BUFFER_RECORDS`].
const BUFFER_BYTES: usize = 4 << 20;

/// A partition of a consumer's topics: the topic's index in [`Shared::topics`], and the
/// partition.
pub(crate) type Partition = (usize, i32);

/// What one kind of consumer does beyond the core: what a record becomes, what else the reader
/// asks of the thread, and what the thread watches for the reader.
pub(crate) trait Kind: Sized + Send + 'static {
    /// A record as the buffer holds it.
    type Item: Send;
    /// What the reader and the thread share beyond the core's [`State`].
    type State: Default + Send;

    /// What `message` becomes in the buffer, and what it costs there in bytes. Runs on the
    /// thread, without the lock.
    fn read(&mut self, shared: &Shared<Self>, message: &BorrowedMessage<'_>) -> (Self::Item, usize);

    /// Runs on every round of the thread, after the reader's commits were stored and before
    /// polling.
    fn service(&mut self, _consumer: &BaseConsumer<Member<Self>>, _shared: &Shared<Self>) {}

    /// A consumer error other than the end of a partition. Returns whether it is worth a
    /// warning (the core says each one at most once a minute).
    fn failed(&mut self, consumer: &BaseConsumer<Member<Self>>, shared: &Shared<Self>, error: &KafkaError) -> bool;

    /// Under the lock, once `partitions` were revoked and the core dropped their records and
    /// commits.
    fn revoked(_state: &mut State<Self>, _partitions: &BTreeSet<Partition>) {}

    /// librdkafka reported `error` outside of a call (a broker unreachable, say); it retries by
    /// itself.
    fn reported(_shared: &Shared<Self>, _error: &KafkaError) {}

    /// Under the lock, once the thread has ended; `committed` is how its final commit went.
    fn closed(&mut self, _state: &mut State<Self>, _committed: &Result<(), String>) {}
}

/// What the reader and the thread share.
pub(crate) struct Shared<K: Kind> {
    state: Mutex<State<K>>,
    /// Wakes the reader when records arrive or what it reports changes.
    wake: Notify,
    /// Set when the handle is dropped: the thread commits, leaves the group and ends.
    stop: AtomicBool,
    /// The thread made its final commit: the revocation that closing the consumer brings has
    /// nothing left to commit.
    committed_final: AtomicBool,
    /// A group member that commits, rather than an assign-only reader.
    pub(crate) commits: bool,
    /// The topics read, sorted: a [`Partition`] names its topic by its index here.
    pub(crate) topics: Vec<String>,
    /// How messages name the consumer: `topic '…'`, `group '…'`.
    pub(crate) what: String,
}

/// The state behind the lock.
pub(crate) struct State<K: Kind> {
    /// Records read and not yet taken, in the order read.
    buffer: VecDeque<Buffered<K::Item>>,
    buffered_bytes: usize,
    /// The partitions the consumer reads now.
    pub(crate) assigned: BTreeSet<Partition>,
    /// Commits for the thread to store.
    commits: BTreeMap<Partition, i64>,
    /// The thread has ended.
    pub(crate) closed: bool,
    /// The kind's own.
    pub(crate) own: K::State,
}

/// A record in the buffer.
pub(crate) struct Buffered<T> {
    pub(crate) partition: Partition,
    pub(crate) bytes: usize,
    pub(crate) item: T,
}

impl<K: Kind> State<K> {
    /// Takes the oldest record.
    pub(crate) fn pop(&mut self) -> Option<Buffered<K::Item>> {
        let buffered = self.buffer.pop_front()?;
        self.buffered_bytes -= buffered.bytes;
        Some(buffered)
    }

    fn clear(&mut self) {
        self.buffer.clear();
        self.buffered_bytes = 0;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Kind> Shared<K> {
    /// The shared part of a consumer of `topics` (sorted here).
    pub(crate) fn new(mut topics: Vec<String>, commits: bool, what: String) -> Arc<Shared<K>> {
        topics.sort();
        topics.dedup();
        let state = State {
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            assigned: BTreeSet::new(),
            commits: BTreeMap::new(),
            closed: false,
            own: K::State::default(),
        };
        Arc::new(Shared {
            state: Mutex::new(state),
            wake: Notify::new(),
            stop: AtomicBool::new(false),
            committed_final: AtomicBool::new(false),
            commits,
            topics,
            what,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State<K>> {
        lock(&self.state)
    }

    /// Wakes the reader, for something it reports.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// `partition` of `topic`, if the consumer reads that topic.
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Option<Partition> {
        self.topics.iter().position(|read| read == topic).map(|index| (index, partition))
    }

    /// Partitions as (topic, partition), for messages.
    fn named<'a>(&'a self, partitions: impl IntoIterator<Item = &'a Partition>) -> Vec<(&'a str, i32)> {
        partitions.into_iter().map(|(topic, partition)| (self.topics[*topic].as_str(), *partition)).collect()
    }

    fn partitions(&self, list: &TopicPartitionList) -> BTreeSet<Partition> {
        list.elements().iter().filter_map(|element| self.partition(element.topic(), element.partition())).collect()
    }
}

/// The reader's end of a consumer thread. Dropping it stops the thread.
pub(crate) struct Handle<K: Kind> {
    shared: Arc<Shared<K>>,
}

impl<K: Kind> Handle<K> {
    pub(crate) fn shared(&self) -> &Shared<K> {
        &self.shared
    }

    /// Calls `take` under the lock until it breaks with a result; between calls, waits for the
    /// thread's wake-up, or until the instant `take` continued with.
    ///
    /// Cancel-safe as long as `take` is: it runs under the lock and never awaits, so dropping
    /// this future at its await loses nothing.
    pub(crate) async fn next<R>(&self, mut take: impl FnMut(&mut State<K>) -> ControlFlow<R, Option<Instant>>) -> R {
        loop {
            // Registered before looking, so that a record arriving in between wakes it.
            let notified = self.shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let until = match take(&mut self.shared.lock()) {
                ControlFlow::Break(result) => return result,
                ControlFlow::Continue(until) => until,
            };
            match until {
                Some(until) => drop(tokio::time::timeout_at(until.into(), notified).await),
                None => notified.await,
            }
        }
    }

    /// Stores `next_offset` as the commit of `partition`, if the consumer reads it; returns
    /// whether it does. A partition it no longer reads belongs to another member now, which
    /// resumes from the group's last commit: progress on it here is moot.
    pub(crate) fn commit(&self, partition: Partition, next_offset: i64) -> bool {
        let mut state = self.shared.lock();
        let assigned = state.assigned.contains(&partition);
        if assigned {
            state.commits.insert(partition, next_offset);
        }
        assigned
    }
}

impl<K: Kind> Drop for Handle<K> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

/// Starts the thread that drives `consumer` (created with a [`Member`] context of `shared`,
/// subscribed or assigned). `ended` runs on the thread once it has closed, with how its final
/// commit went.
pub(crate) fn spawn<K: Kind>(
    consumer: BaseConsumer<Member<K>>,
    kind: K,
    name: &str,
    ended: impl FnOnce(Result<(), String>) + Send + 'static,
) -> Result<Handle<K>, LogError> {
    let shared = Arc::clone(&consumer.context().shared);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || ended(run(consumer, kind)))
        .map_err(LogError::Io)?;
    Ok(Handle { shared })
}

/// Reads until stopped, then closes; returns how the final commit went.
fn run<K: Kind>(consumer: BaseConsumer<Member<K>>, mut kind: K) -> Result<(), String> {
    let shared = Arc::clone(&consumer.context().shared);
    let mut paused = false;
    let mut last_error: Option<(String, Instant)> = None;
    while !shared.stop.load(Ordering::Acquire) {
        if shared.commits {
            store_commits(&consumer, &shared);
        }
        kind.service(&consumer, &shared);
        paused = backpressure(&consumer, &shared, paused);
        match consumer.poll(POLL_INTERVAL) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Ok(message)) => {
                // Every message is of a topic the consumer reads.
                let Some(partition) = shared.partition(message.topic(), message.partition()) else { continue };
                let (item, bytes) = kind.read(&shared, &message);
                {
                    let mut state = shared.lock();
                    state.buffered_bytes += bytes;
                    state.buffer.push_back(Buffered { partition, bytes, item });
                }
                shared.wake();
            }
            Some(Err(error)) => {
                if kind.failed(&consumer, &shared, &error) && client::say_again(&mut last_error, &error) {
                    tracing::warn!(consumer = %shared.what, %error, "reading");
                }
            }
        }
    }
    let committed = if shared.commits {
        store_commits(&consumer, &shared);
        commit_stored(&consumer, &shared.what)
    } else {
        Ok(())
    };
    shared.committed_final.store(true, Ordering::Release);
    // Leaves the group.
    drop(consumer);
    {
        let mut state = shared.lock();
        state.closed = true;
        state.clear();
        state.assigned.clear();
        kind.closed(&mut state, &committed);
    }
    shared.wake();
    committed
}

/// Pauses fetching while the buffer is full, resumes once it has drained to half. Returns
/// whether fetching is paused.
fn backpressure<K: Kind>(consumer: &BaseConsumer<Member<K>>, shared: &Shared<K>, paused: bool) -> bool {
    let (records, bytes) = {
        let state = shared.lock();
        (state.buffer.len(), state.buffered_bytes)
    };
    let full = records >= BUFFER_RECORDS || bytes >= BUFFER_BYTES;
    let drained = records <= BUFFER_RECORDS / 2 && bytes <= BUFFER_BYTES / 2;
    let pause = full || (paused && !drained);
    if pause || paused {
        if let Ok(assignment) = consumer.assignment() {
            // Paused again on every round while full: a rebalance may have assigned
            // partitions since, which start unpaused.
            let result = if pause { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
            if let Err(error) = result {
                tracing::debug!(consumer = %shared.what, %error, "pause or resume");
            }
        }
    }
    pause
}

/// Hands the reader's commits to librdkafka's offset store.
fn store_commits<K: Kind>(consumer: &BaseConsumer<Member<K>>, shared: &Shared<K>) {
    let commits = std::mem::take(&mut shared.lock().commits);
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in commits {
        // Fails only for an offset Kafka cannot hold, which the reader refuses.
        let _ = offsets.add_partition_offset(&shared.topics[topic], partition, Offset::Offset(offset));
    }
    if offsets.count() == 0 {
        return;
    }
    // Fails only for partitions that were revoked meanwhile: their commits are moot, as the
    // next owner resumes from the group's last commit.
    if let Err(error) = consumer.store_offsets(&offsets) {
        tracing::debug!(consumer = %shared.what, %error, "storing offsets");
    }
}

/// Commits the stored offsets synchronously; `Err` with the reason when Kafka refused.
pub(crate) fn commit_stored<C: ConsumerContext>(consumer: &BaseConsumer<C>, what: &dyn Display) -> Result<(), String> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => Ok(()),
        // Nothing stored since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(error) => {
            tracing::warn!(%what, %error, "commit failed");
            Err(format!("cannot commit offsets on {what}: {error}"))
        }
    }
}

/// The consumer's context: logs go to `tracing`, rebalances update the shared state.
pub(crate) struct Member<K: Kind> {
    base: Context,
    shared: Arc<Shared<K>>,
}

impl<K: Kind> Member<K> {
    pub(crate) fn new(base: Context, shared: &Arc<Shared<K>>) -> Member<K> {
        Member { base, shared: Arc::clone(shared) }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let shared = &*self.shared;
        // Commit what the reader marked done before the partitions go: the next owner resumes
        // there rather than at the last auto-commit. A failure is logged; the partitions go
        // either way, and their next owner resumes from the last commit that succeeded. A lost
        // assignment (the session expired) can no longer commit.
        if consumer.assignment_lost() {
            tracing::warn!(consumer = %shared.what, "session expired; partitions lost without a commit");
        } else if shared.commits && !shared.committed_final.load(Ordering::Acquire) {
            store_commits(consumer, shared);
            let _ = commit_stored(consumer, &shared.what);
        }
        let gone = shared.partitions(revoked);
        let mut guard = shared.lock();
        let state = &mut *guard;
        for partition in &gone {
            state.assigned.remove(partition);
            state.commits.remove(partition);
        }
        // Records of the partitions still buffered are dropped: the next owner reads them.
        // (The thread alone buffers records and serves rebalances, so none read before the
        // revocation can arrive after it.)
        let mut dropped = 0;
        state.buffer.retain(|buffered| {
            let keep = !gone.contains(&buffered.partition);
            if !keep {
                dropped += buffered.bytes;
            }
            keep
        });
        state.buffered_bytes -= dropped;
        K::revoked(state, &gone);
        tracing::info!(
            consumer = %shared.what,
            revoked = ?shared.named(&gone),
            assigned = ?shared.named(&state.assigned),
            "partitions revoked"
        );
    }
}

impl<K: Kind> ClientContext for Member<K> {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.base.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        K::reported(&self.shared, &error);
        self.base.error(error, reason);
    }
}

impl<K: Kind> ConsumerContext for Member<K> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => self.revoke(consumer, revoked),
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => tracing::warn!(consumer = %self.shared.what, %error, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let mut state = self.shared.lock();
            state.assigned.extend(self.shared.partitions(assigned));
            tracing::info!(consumer = %self.shared.what, assigned = ?self.shared.named(&state.assigned), "partitions assigned");
        }
    }
}
