//! The embedded event log: a segmented, checksummed, group-committed append-only log per topic
//! in a data directory, implementing [`switchyard_log::EventLog`].
//!
//! Layout of the data directory:
//!
//! - `topics/<topic>/<base>.log`: segment files of records
//!   `len:u32 | crc32c:u32 | offset:u64 | timestamp_ms:i64 | payload`, payload being
//!   [`switchyard_event::storage::encode`] of the event; `<base>` is the first offset in the
//!   file, 20 digits.
//! - `topics/<topic>/<base>.idx`: sparse offset → file position index (rebuilt when lost).
//! - `offsets.redb`: committed group positions (`"topic/group"` → next offset), and the
//!   dead-letter store (tables `deadletters` and `deadletter_ids`, see `deadletters.rs`), which
//!   neither retention nor topic or group deletion touch.
//! - `trash/`: topics being deleted (renamed here first, so a crash never leaves half a topic).
//!
//! Each topic has one writer thread doing group commit (see `writer.rs`): an append returns
//! once its records are fsynced, and readers see nothing past the fsynced end. On open, the
//! tail of each topic's last segment is validated and cut at the first torn or corrupt record.

mod deadletters;
mod declarations;
mod groups;
mod reader;
mod record;
mod segment;
mod state;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use switchyard_event::Event;
use switchyard_log::{
    Backend, DeadLetterStore, EventLog, LogError, MetricDescription, MetricKind, SingleNode, StateStore, Subscription,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::deadletters::DeadLetters;
use crate::groups::Groups;
use crate::reader::EmbeddedSubscription;
use crate::segment::Segment;
use crate::state::State;
use crate::writer::{AppendRequest, Writer};

pub use crate::declarations::LocalDeclarations;

/// A single node's backend: the log in `config.dir`, the declarations in `declarations` (a
/// redb file, `meta.redb` in the data directory), and one node holding every slot.
pub async fn open(config: EmbeddedConfig, declarations: &Path) -> Result<Backend, LogError> {
    let log = EmbeddedLog::open(config).await?;
    let declarations = LocalDeclarations::open(declarations)?;
    Ok(Backend { log, declarations: Arc::new(declarations), placement: Arc::new(SingleNode::default()) })
}

/// Segments larger than this are not allowed: index entries hold 32-bit file positions.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// Appends queued per topic before `append` waits for room (backpressure).
const QUEUE_DEPTH: usize = 4096;

/// How often dirty group commits are persisted (in one fsynced transaction).
const COMMIT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The data directory (created if missing).
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it would grow past this many bytes
    /// (default 64 MiB, at most [`MAX_SEGMENT_BYTES`]). One append batch never spans two
    /// segments, so a segment may exceed it by one batch.
    pub segment_bytes: u64,
    /// Closed segments whose last record is older than this are deleted (default 7 days).
    pub retention_age: Duration,
    /// Closed segments are deleted, oldest first, while a topic is larger than this
    /// (default 10 GiB).
    pub retention_bytes: u64,
    /// Closed segments are deleted, oldest first across all topics, while the whole log is
    /// larger than this (default 50 GiB): brokers share one disk.
    pub retention_total_bytes: u64,
    /// How often retention runs (default 60 s).
    pub retention_check_interval: Duration,
}

impl EmbeddedConfig {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            retention_age: Duration::from_secs(7 * 24 * 3600),
            retention_bytes: 10 << 30,
            retention_total_bytes: 50 << 30,
            retention_check_interval: Duration::from_secs(60),
        }
    }
}

/// Counters since open, across all topics (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Successful `append` calls.
    pub appends: u64,
    /// Events appended by them.
    pub events: u64,
    /// Data fsyncs (one per write batch): `appends / fsyncs` is the group-commit batch size.
    pub fsyncs: u64,
    /// Record bytes written durably.
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    appends: AtomicU64,
    events: AtomicU64,
    fsyncs: AtomicU64,
    bytes: AtomicU64,
}

/// Appends (requests) written per fsync: the group-commit batch size.
pub const METRIC_FSYNC_BATCH: &str = "switchyard_log_fsync_batch_appends";
/// Events made durable.
pub const METRIC_APPENDED_EVENTS: &str = "switchyard_log_appended_events_total";
/// Record bytes made durable.
pub const METRIC_WRITTEN_BYTES: &str = "switchyard_log_written_bytes_total";
/// Data fsyncs.
pub const METRIC_FSYNCS: &str = "switchyard_log_fsyncs_total";

/// The series above, described.
/// Events retention deleted before a group read them, by `topic` and `group`.
pub const METRIC_RETENTION_UNREAD: &str = "switchyard_log_retention_unread_events_total";

const METRICS: &[MetricDescription] = &[
    MetricDescription {
        name: METRIC_RETENTION_UNREAD,
        kind: MetricKind::Counter,
        unit: "",
        help: "Events retention deleted before a trigger read them, by topic and group.",
    },
    MetricDescription {
        name: METRIC_FSYNC_BATCH,
        kind: MetricKind::Histogram,
        unit: "",
        help: "Append requests made durable by one fsync (group commit).",
    },
    MetricDescription {
        name: METRIC_APPENDED_EVENTS,
        kind: MetricKind::Counter,
        unit: "",
        help: "Events made durable in the embedded log.",
    },
    MetricDescription {
        name: METRIC_WRITTEN_BYTES,
        kind: MetricKind::Counter,
        unit: "bytes",
        help: "Record bytes made durable in the embedded log.",
    },
    MetricDescription {
        name: METRIC_FSYNCS,
        kind: MetricKind::Counter,
        unit: "",
        help: "Data fsyncs of the embedded log.",
    },
];

/// The counters behind [`LogStats`], mirrored into the `metrics` facade for the exporter.
impl Counters {
    pub(crate) fn record_batch(&self, appends: u64, events: u64) {
        self.appends.fetch_add(appends, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        metrics::histogram!(METRIC_FSYNC_BATCH).record(appends as f64);
        metrics::counter!(METRIC_APPENDED_EVENTS).increment(events);
    }

    pub(crate) fn add_fsync(&self) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_FSYNCS).increment(1);
    }

    pub(crate) fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        metrics::counter!(METRIC_WRITTEN_BYTES).increment(bytes);
    }

    fn snapshot(&self) -> LogStats {
        LogStats {
            appends: self.appends.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Locks a mutex, ignoring poisoning: every critical section leaves its data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One topic: its segment table (shared by writer, readers and retention), its durable end,
/// and the channel to its writer thread.
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) segments: RwLock<BTreeMap<u64, Segment>>,
    /// The offset after the last durable record.
    pub(crate) durable: watch::Receiver<u64>,
    pub(crate) deleted: AtomicBool,
    sender: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Tests: how many upcoming batches fail after their write, before fsync.
    #[cfg(test)]
    pub(crate) inject_sync_failures: std::sync::atomic::AtomicU32,
}

impl Topic {
    /// Recovers the topic directory and starts its writer thread.
    fn open(dir: PathBuf, name: &str, segment_bytes: u64, counters: &Arc<Counters>) -> io::Result<Arc<Topic>> {
        let recovered = segment::recover(&dir, name)?;
        let (durable_tx, durable_rx) = watch::channel(recovered.active.next_offset);
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            dir,
            segments: RwLock::new(recovered.segments),
            durable: durable_rx,
            deleted: AtomicBool::new(false),
            sender: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
            #[cfg(test)]
            inject_sync_failures: std::sync::atomic::AtomicU32::new(0),
        });
        let writer = Writer {
            topic: Arc::clone(&topic),
            rx,
            durable: durable_tx,
            active: recovered.active,
            segment_bytes,
            counters: Arc::clone(counters),
            needs_truncate: false,
            buf: Vec::new(),
        };
        let handle = std::thread::Builder::new().name(format!("log-{name}")).spawn(move || writer.run())?;
        *lock(&topic.writer) = Some(handle);
        Ok(topic)
    }

    /// Closes the writer's channel; the thread finishes what is queued, then exits.
    fn stop_writer(&self) -> Option<JoinHandle<()>> {
        lock(&self.sender).take();
        lock(&self.writer).take()
    }

    /// Removes the closed segments that retention no longer keeps from the table (oldest
    /// first: the active, last one always stays, and the log stays contiguous); the caller
    /// deletes their files ([`Topic::delete_segments`]).
    fn take_expired(&self, now_ms: i64, age_ms: i64, max_bytes: u64) -> Vec<Segment> {
        let mut segments = write_lock(&self.segments);
        let mut total: u64 = segments.values().map(|s| s.size).sum();
        let mut removed = Vec::new();
        while segments.len() > 1 {
            let Some(first) = segments.first_entry() else { break };
            let segment = first.get();
            let expired = segment.last_ts.is_none_or(|ts| now_ms.saturating_sub(ts) > age_ms);
            if !expired && total <= max_bytes {
                break;
            }
            total -= segment.size;
            removed.push(first.remove());
        }
        removed
    }

    /// The oldest closed segment: its last record's time and its size.
    fn oldest_closed(&self) -> Option<(i64, u64)> {
        let segments = read_lock(&self.segments);
        let first = segments.values().next().filter(|_| segments.len() > 1)?;
        Some((first.last_ts.unwrap_or(i64::MIN), first.size))
    }

    /// Removes the oldest closed segment from the table, if there is one.
    fn take_oldest(&self) -> Option<Segment> {
        let mut segments = write_lock(&self.segments);
        (segments.len() > 1).then(|| segments.pop_first().map(|(_, segment)| segment)).flatten()
    }

    /// Bytes held by the topic's segments.
    fn size(&self) -> u64 {
        read_lock(&self.segments).values().map(|s| s.size).sum()
    }

    /// Deletes the files of segments taken out of the table, and counts, per group, the events
    /// they held that the group had not read yet: retention is not supposed to outrun a
    /// trigger, and when it does the loss must show.
    fn delete_segments(&self, removed: &[Segment], groups: &Groups, why: &'static str) {
        for segment in removed {
            for path in [&segment.log_path, &segment.idx_path] {
                if let Err(e) = fs::remove_file(path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        warn!(topic = %self.name, path = %path.display(), error = %e, "cannot delete a retired segment file");
                    }
                }
            }
            info!(topic = %self.name, segment = segment.base, next_offset = segment.next_offset, bytes = segment.size,
                why, "retention deleted a segment");
            for (group, position) in groups.of_topic(&self.name) {
                let unread = segment.next_offset.saturating_sub(position.max(segment.base));
                if unread > 0 {
                    error!(topic = %self.name, group, unread, why, "retention deleted events a trigger had not read");
                    metrics::counter!(METRIC_RETENTION_UNREAD, "topic" => self.name.clone(), "group" => group)
                        .increment(unread);
                }
            }
        }
        if !removed.is_empty() {
            if let Err(e) = segment::sync_dir(&self.dir) {
                warn!(topic = %self.name, error = %e, "cannot fsync the topic directory after retention");
            }
        }
    }
}

/// Checks a topic name: 1 to 249 characters of `[a-z0-9.-]`, not starting with `.` (so that
/// it is a safe directory name).
fn validate_topic(name: &str) -> Result<(), LogError> {
    let valid = !name.is_empty()
        && name.len() <= 249
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(LogError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid topic name '{name}': use 1 to 249 characters of [a-z0-9.-], not starting with '.'"),
        )))
    }
}

/// A periodic background thread and the means to stop it.
struct Background {
    stop: std::sync::mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

fn spawn_periodic(name: &str, period: Duration, mut tick: impl FnMut() + Send + 'static) -> io::Result<Background> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        // Any message, or the sender dropping, stops the thread.
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
            tick();
        }
    })?;
    Ok(Background { stop, handle })
}

/// What shutting down has to wait for, taken out of the log so it can run off the async
/// threads.
struct Shutdown {
    background: Vec<Background>,
    writers: Vec<JoinHandle<()>>,
    groups: Arc<Groups>,
}

impl Shutdown {
    fn run(self) {
        for background in self.background {
            let _ = background.stop.send(());
            let _ = background.handle.join();
        }
        for writer in self.writers {
            let _ = writer.join();
        }
        if let Err(e) = self.groups.close() {
            warn!(error = %e, "cannot persist group positions on close");
        }
    }
}

/// The embedded log. Open with [`EmbeddedLog::open`]; stop with [`EmbeddedLog::close`] (or
/// by dropping the last reference, which does the same, blocking).
pub struct EmbeddedLog {
    config: EmbeddedConfig,
    topics_dir: PathBuf,
    trash_dir: PathBuf,
    topics: Arc<RwLock<HashMap<String, Arc<Topic>>>>,
    /// Serializes topic and group creation and deletion.
    admin: tokio::sync::Mutex<()>,
    groups: Arc<Groups>,
    /// Shares the groups' database, and closes with it.
    dead_letters: Arc<DeadLetters>,
    state: Arc<State>,
    counters: Arc<Counters>,
    background: Mutex<Vec<Background>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog").field("dir", &self.config.dir).finish_non_exhaustive()
    }
}

impl EmbeddedLog {
    /// Opens the data directory (creating it if needed), recovers every topic in it, and
    /// starts the writer, commit-flusher and retention threads.
    pub async fn open(config: EmbeddedConfig) -> Result<Arc<EmbeddedLog>, LogError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(|e| LogError::Io(io::Error::other(format!("open task failed: {e}"))))?
    }

    fn open_blocking(mut config: EmbeddedConfig) -> Result<Arc<EmbeddedLog>, LogError> {
        if config.segment_bytes > MAX_SEGMENT_BYTES {
            warn!(
                segment_bytes = config.segment_bytes,
                max = MAX_SEGMENT_BYTES,
                "segment size too large; using the maximum"
            );
            config.segment_bytes = MAX_SEGMENT_BYTES;
        }
        let topics_dir = config.dir.join("topics");
        let trash_dir = config.dir.join("trash");
        fs::create_dir_all(&topics_dir)?;
        fs::create_dir_all(&trash_dir)?;
        segment::sync_dir(&config.dir)?;
        // Leftovers of deletions interrupted by a crash.
        for entry in fs::read_dir(&trash_dir)? {
            let path = entry?.path();
            if let Err(e) = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path)) {
                warn!(path = %path.display(), error = %e, "cannot clear a deleted topic");
            }
        }
        let groups = Arc::new(Groups::open(&config.dir.join("offsets.redb"))?);
        let dead_letters = Arc::new(DeadLetters::open(groups.database())?);
        let state = Arc::new(State::open(groups.database())?);
        let counters = Arc::new(Counters::default());

        let mut topics = HashMap::new();
        for entry in fs::read_dir(&topics_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| validate_topic(n).is_ok()) else {
                warn!(entry = ?entry.file_name(), "ignoring an entry that is not a topic in the topics directory");
                continue;
            };
            if !entry.file_type()?.is_dir() {
                warn!(entry = name, "ignoring a file in the topics directory");
                continue;
            }
            let topic = Topic::open(entry.path(), name, config.segment_bytes, &counters)?;
            topics.insert(name.to_owned(), topic);
        }
        // Groups of a topic whose deletion was interrupted after its files went (or never
        // created): a recreated topic must not inherit their positions.
        for orphan in groups.topics().into_iter().filter(|t| !topics.contains_key(t)) {
            warn!(topic = orphan, "deleting groups of a topic that does not exist");
            groups.delete_topic(&orphan)?;
        }

        let topics = Arc::new(RwLock::new(topics));
        let flusher = {
            let groups = Arc::clone(&groups);
            spawn_periodic("log-commits", COMMIT_FLUSH_INTERVAL, move || {
                if let Err(e) = groups.persist(false) {
                    warn!(error = %e, "cannot persist group positions");
                }
            })?
        };
        let retention = {
            let (topics, groups, config) = (Arc::clone(&topics), Arc::clone(&groups), config.clone());
            spawn_periodic("log-retention", config.retention_check_interval, move || {
                enforce_retention(&topics, &groups, &config);
            })?
        };
        Ok(Arc::new(EmbeddedLog {
            config,
            topics_dir,
            trash_dir,
            topics,
            admin: tokio::sync::Mutex::new(()),
            groups,
            dead_letters,
            state,
            counters,
            background: Mutex::new(vec![flusher, retention]),
            closed: AtomicBool::new(false),
        }))
    }

    /// Stops the writers (after they finish queued appends) and background threads, persists
    /// group positions durably and releases the directory. Later calls fail with
    /// [`LogError::Closed`]; open subscriptions return what is durable, then `Closed`.
    pub async fn close(&self) {
        let _admin = self.admin.lock().await;
        if let Some(shutdown) = self.begin_shutdown() {
            if let Err(e) = tokio::task::spawn_blocking(move || shutdown.run()).await {
                warn!(error = %e, "shutdown task failed");
            }
        }
    }

    fn begin_shutdown(&self) -> Option<Shutdown> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return None;
        }
        let background = std::mem::take(&mut *lock(&self.background));
        let writers = read_lock(&self.topics).values().filter_map(|t| t.stop_writer()).collect();
        Some(Shutdown { background, writers, groups: Arc::clone(&self.groups) })
    }

    /// The offset the next appended event of `topic` gets (the durable end), if the topic
    /// exists.
    pub fn end_offset(&self, topic: &str) -> Option<u64> {
        read_lock(&self.topics).get(topic).map(|t| *t.durable.borrow())
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.counters.snapshot()
    }

    /// Runs retention now (it also runs every `retention_check_interval`); returns how many
    /// segments it deleted.
    pub fn enforce_retention(&self) -> usize {
        enforce_retention(&self.topics, &self.groups, &self.config)
    }

    /// The configuration in force.
    pub fn config(&self) -> &EmbeddedConfig {
        &self.config
    }

    fn ensure_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.ensure_open()?;
        read_lock(&self.topics).get(name).cloned().ok_or_else(|| LogError::UnknownTopic(name.to_owned()))
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        if let Some(shutdown) = self.begin_shutdown() {
            shutdown.run();
        }
    }
}

/// Retention: each topic's own limits (`retention_age`, `retention_bytes`), then the budget of
/// all topics together (`retention_total_bytes`), which deletes the oldest closed segment of
/// any topic until the whole log fits. Returns how many segments were deleted.
fn enforce_retention(topics: &RwLock<HashMap<String, Arc<Topic>>>, groups: &Groups, config: &EmbeddedConfig) -> usize {
    let now = now_ms();
    let age_ms = i64::try_from(config.retention_age.as_millis()).unwrap_or(i64::MAX);
    let topics: Vec<Arc<Topic>> = read_lock(topics).values().cloned().collect();
    let mut deleted = 0;
    for topic in &topics {
        let removed = topic.take_expired(now, age_ms, config.retention_bytes);
        topic.delete_segments(&removed, groups, "topic retention");
        deleted += removed.len();
    }
    let mut total: u64 = topics.iter().map(|topic| topic.size()).sum();
    while total > config.retention_total_bytes {
        let oldest =
            topics.iter().filter_map(|topic| Some((topic.oldest_closed()?, topic))).min_by_key(|((ts, _), _)| *ts);
        let Some((_, topic)) = oldest else {
            warn!(
                total,
                budget = config.retention_total_bytes,
                "the log is over its total budget with no closed segment left to delete"
            );
            break;
        };
        let Some(segment) = topic.take_oldest() else { continue };
        total = total.saturating_sub(segment.size);
        topic.delete_segments(std::slice::from_ref(&segment), groups, "total budget");
        deleted += 1;
    }
    deleted
}

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, LogError> + Send + 'static) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::Io(io::Error::other(format!("blocking task failed: {e}"))))?
}

/// Removes a topic directory: renamed into the trash first, so that a crash mid-way leaves
/// either the whole topic or nothing (the trash is cleared on open).
fn remove_topic_dir(topics_dir: &Path, trash_dir: &Path, name: &str) -> Result<(), LogError> {
    let dir = topics_dir.join(name);
    let trash = trash_dir.join(format!("{name}-{}", now_ms()));
    match fs::rename(&dir, &trash) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    segment::sync_dir(topics_dir)?;
    if let Err(e) = fs::remove_dir_all(&trash) {
        warn!(topic = name, error = %e, "cannot remove a deleted topic's files; they go on the next open");
    }
    Ok(())
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn metrics(&self) -> &'static [MetricDescription] {
        METRICS
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        Arc::clone(&self.dead_letters) as Arc<dyn DeadLetterStore>
    }

    fn state(&self) -> Arc<dyn StateStore> {
        Arc::clone(&self.state) as Arc<dyn StateStore>
    }

    async fn create_topic(&self, topic: &str) -> Result<(), LogError> {
        validate_topic(topic)?;
        let _admin = self.admin.lock().await;
        self.ensure_open()?;
        if read_lock(&self.topics).contains_key(topic) {
            return Ok(());
        }
        let (topics_dir, name) = (self.topics_dir.clone(), topic.to_owned());
        let (segment_bytes, counters) = (self.config.segment_bytes, Arc::clone(&self.counters));
        let opened = blocking(move || {
            let dir = topics_dir.join(&name);
            fs::create_dir_all(&dir)?;
            segment::sync_dir(&topics_dir)?;
            Ok(Topic::open(dir, &name, segment_bytes, &counters)?)
        })
        .await?;
        write_lock(&self.topics).insert(topic.to_owned(), opened);
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), LogError> {
        validate_topic(topic)?;
        let _admin = self.admin.lock().await;
        self.ensure_open()?;
        let removed = write_lock(&self.topics).remove(topic);
        let writer = removed.as_ref().and_then(|t| {
            t.deleted.store(true, Ordering::Release);
            t.stop_writer()
        });
        let (groups, name) = (Arc::clone(&self.groups), topic.to_owned());
        let (topics_dir, trash_dir) = (self.topics_dir.clone(), self.trash_dir.clone());
        blocking(move || {
            if let Some(writer) = writer {
                let _ = writer.join();
            }
            // Groups first: if a crash comes between, the topic reappears without groups,
            // rather than a recreated topic inheriting old positions.
            groups.delete_topic(&name)?;
            remove_topic_dir(&topics_dir, &trash_dir, &name)
        })
        .await
    }

    async fn append(&self, topic: &str, events: &[Event]) -> Result<(), LogError> {
        let t = self.topic(topic)?;
        if events.is_empty() {
            return Ok(());
        }
        let mut frames = Vec::with_capacity(events.len() * 256);
        for event in events {
            record::push_frame(&mut frames, event)?;
        }
        let (reply, outcome) = oneshot::channel();
        let sender = lock(&t.sender).clone();
        let gone = || {
            if t.deleted.load(Ordering::Acquire) {
                LogError::UnknownTopic(topic.to_owned())
            } else {
                LogError::Closed
            }
        };
        let sender = sender.ok_or_else(gone)?;
        sender.send(AppendRequest { frames, reply }).await.map_err(|_| gone())?;
        drop(sender);
        outcome.await.map_err(|_| LogError::Unavailable(format!("the writer of topic '{topic}' stopped")))?
    }

    async fn create_group(&self, topic: &str, group: &str) -> Result<(), LogError> {
        let _admin = self.admin.lock().await;
        let t = self.topic(topic)?;
        let end = *t.durable.borrow();
        let (groups, topic, group) = (Arc::clone(&self.groups), topic.to_owned(), group.to_owned());
        blocking(move || groups.create(&topic, &group, end)).await
    }

    async fn delete_group(&self, topic: &str, group: &str) -> Result<(), LogError> {
        let _admin = self.admin.lock().await;
        self.ensure_open()?;
        let (groups, topic, group) = (Arc::clone(&self.groups), topic.to_owned(), group.to_owned());
        blocking(move || groups.delete(&topic, &group)).await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, LogError> {
        let t = self.topic(topic)?;
        let cursor = self
            .groups
            .get(topic, group)
            .ok_or_else(|| LogError::UnknownGroup { topic: topic.to_owned(), group: group.to_owned() })?;
        Ok(Box::new(EmbeddedSubscription::new(t, group.to_owned(), Arc::clone(&self.groups), cursor)))
    }

    async fn reader(&self, topic: &str, partition: u32, offset: u64) -> Result<Box<dyn Subscription>, LogError> {
        let t = self.topic(topic)?;
        let mut reader = EmbeddedSubscription::new(t, String::new(), Arc::clone(&self.groups), offset);
        reader.seek(partition, offset)?;
        Ok(Box::new(reader))
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, LogError> {
        self.end_offset(topic).map(|end| vec![end]).ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))
    }

    async fn flush(&self) -> Result<(), LogError> {
        self.ensure_open()?;
        let groups = Arc::clone(&self.groups);
        blocking(move || groups.persist(true)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        switchyard_log::testkit::sample_event(id, 16)
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_the_batch_and_cuts_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(EmbeddedConfig::new(dir.path())).await.unwrap();
        log.create_topic("t").await.unwrap();
        log.create_group("t", "g").await.unwrap();
        log.append("t", &[event("a")]).await.unwrap();
        let topic = log.topic("t").unwrap();
        let segment = segment::log_path(&topic.dir, 0);
        let len_before = fs::metadata(&segment).unwrap().len();

        topic.inject_sync_failures.store(1, Ordering::Relaxed);
        let err = log.append("t", &[event("lost"), event("lost2")]).await.unwrap_err();
        assert!(matches!(err, LogError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("'t'"), "{err}");
        assert_eq!(fs::metadata(&segment).unwrap().len(), len_before, "the failed batch is cut off");
        assert_eq!(log.end_offset("t"), Some(1));

        log.append("t", &[event("b")]).await.unwrap();
        assert_eq!(log.end_offset("t"), Some(2));
        let mut sub = log.subscribe("t", "g").await.unwrap();
        let read = sub.next_batch(10).await.unwrap();
        let ids: Vec<_> = read.iter().map(|e| (e.position.offset, e.event.id().to_owned())).collect();
        assert_eq!(ids, [(0, "a".to_owned()), (1, "b".to_owned())]);
        drop(sub);
        drop(topic);
        log.close().await;

        // And the file on disk holds exactly those two records.
        let log = EmbeddedLog::open(EmbeddedConfig::new(dir.path())).await.unwrap();
        assert_eq!(log.end_offset("t"), Some(2));
    }

    #[tokio::test]
    async fn invalid_topic_names_are_rejected_with_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(EmbeddedConfig::new(dir.path())).await.unwrap();
        for bad in ["", "Upper", "a/b", "..", ".hidden", "sp ace", "under_score"] {
            let err = log.create_topic(bad).await.unwrap_err();
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
        log.create_topic("default.my-broker-2").await.unwrap();
    }
}
