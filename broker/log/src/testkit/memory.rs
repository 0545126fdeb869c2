//! An in-memory backend for tests of what runs on the log (the dispatcher, the API, sources):
//! [`MemoryLog`] (an [`EventLog`] with its [`DeadLetterStore`] and [`StateStore`]) and
//! [`MemoryDeclarations`] (a [`DeclarationLog`]).
//!
//! It behaves as the embedded log does — one partition per topic, groups created at the end
//! of the topic, the same errors — and passes the same conformance suite, but keeps
//! everything in memory and is "durable" on return. It uses no thread and no real sleep, only
//! tokio's sync primitives, so it works under `tokio::time::pause()`.
//!
//! [`Faults`] makes calls fail with [`LogError::Unavailable`] on demand, for tests of how the
//! caller survives an outage; [`MemoryLog::committed`] shows what a group committed.
//!
//! ```
//! # use switchyard_log::{EventLog, LogError, Subscription};
//! # use switchyard_log::testkit::{memory::{Fault, MemoryLog}, sample_event};
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), LogError> {
//! let log = MemoryLog::new();
//! log.create_topic("default.broker").await?;
//! log.create_group("default.broker", "trigger").await?;
//! log.faults().fail_next(Fault::Append, 1);
//! assert!(matches!(log.append("default.broker", &[sample_event("a", 8)]).await, Err(LogError::Unavailable(_))));
//! log.append("default.broker", &[sample_event("a", 8)]).await?;
//! let mut subscription = log.subscribe("default.broker", "trigger").await?;
//! let read = subscription.next_batch(10).await?;
//! subscription.commit(0, read[0].position.offset + 1)?;
//! assert_eq!(log.committed("default.broker", "trigger"), Some(1));
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use switchyard_event::Event;
use tokio::sync::{mpsc, watch};

use crate::{
    Backend, Change, Changes, DeadLetter, DeadLetterStore, DeclarationLog, EventLog, LogError, LogEvent, Position,
    SingleNode, StateStore, Subscription,
};

/// Locks a mutex, ignoring poisoning: every critical section leaves its data consistent, and
/// a test that panicked while holding one should not make every later call panic too.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch, from the system clock: timestamps are wall-clock time in
/// every backend, and tokio's paused clock has no epoch.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn invalid_input(message: String) -> LogError {
    LogError::Io(io::Error::new(io::ErrorKind::InvalidInput, message))
}

/// Checks a topic name as the embedded log does: 1 to 249 characters of `[a-z0-9.-]`, not
/// starting with `.`, so that a name the in-memory log takes is one the embedded log takes.
fn validate_topic(name: &str) -> Result<(), LogError> {
    let valid = !name.is_empty()
        && name.len() <= 249
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(invalid_input(format!(
            "invalid topic name '{name}': use 1 to 249 characters of [a-z0-9.-], not starting with '.'"
        )))
    }
}

/// A kind of call that [`Faults`] can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// [`EventLog::append`], whatever the topic.
    Append,
    /// [`EventLog::subscribe`] (not [`EventLog::reader`], which the dispatcher's fanout does
    /// not retry).
    Subscribe,
    /// [`Subscription::next_batch`] of any subscription or reader (at once, without waiting
    /// for events).
    Read,
    /// [`Subscription::commit`] of a group's subscription (the position stays unchanged).
    Commit,
    /// [`DeadLetterStore::put`].
    DeadLetterPut,
    /// [`StateStore::put`] and [`StateStore::remove`].
    StateWrite,
    /// [`EventLog::create_group`] (what makes a trigger take effect).
    CreateGroup,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::Append,
        Fault::Subscribe,
        Fault::Read,
        Fault::Commit,
        Fault::DeadLetterPut,
        Fault::StateWrite,
        Fault::CreateGroup,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn describe(self) -> &'static str {
        match self {
            Fault::Append => "append",
            Fault::Subscribe => "subscribe",
            Fault::Read => "read",
            Fault::Commit => "commit",
            Fault::DeadLetterPut => "dead-letter put",
            Fault::StateWrite => "state write",
            Fault::CreateGroup => "group creation",
        }
    }
}

/// Failures to inject: for each [`Fault`], how many of the next such calls fail with
/// [`LogError::Unavailable`] (an outage the caller is expected to ride out). A failing call
/// changes nothing. Shared by a [`MemoryLog`], its subscriptions and its stores.
#[derive(Debug, Default)]
pub struct Faults {
    remaining: [AtomicU32; Fault::ALL.len()],
}

impl Faults {
    /// Makes the next `times` calls of kind `fault` fail (replacing what was left of an
    /// earlier injection; 0 clears it).
    pub fn fail_next(&self, fault: Fault, times: u32) {
        self.remaining[fault.index()].store(times, Ordering::SeqCst);
    }

    /// How many calls of kind `fault` are still to fail: 0 once every injected failure has
    /// happened.
    pub fn remaining(&self, fault: Fault) -> u32 {
        self.remaining[fault.index()].load(Ordering::SeqCst)
    }

    /// Clears every injected failure.
    pub fn clear(&self) {
        for fault in Fault::ALL {
            self.fail_next(fault, 0);
        }
    }

    /// Takes one failure of kind `fault`, if any is left: `Err` for the call to return.
    fn check(&self, fault: Fault, what: &str) -> Result<(), LogError> {
        let taken =
            self.remaining[fault.index()].fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match taken {
            Ok(_) => Err(LogError::Unavailable(format!("injected {} failure: {what}", fault.describe()))),
            Err(_) => Ok(()),
        }
    }
}

/// One topic: its events, its groups, and the end readers wait on.
#[derive(Debug)]
struct Topic {
    name: String,
    /// Every event, at the index of its offset.
    events: Mutex<Vec<LogEvent>>,
    /// The offset after the last event; changed (under the `events` lock, so in offset order)
    /// by every append, and poked when the topic is deleted or the log closed.
    end: watch::Sender<u64>,
    /// Group → committed position (the next offset to read).
    groups: Mutex<HashMap<String, u64>>,
    deleted: AtomicBool,
}

impl Topic {
    fn new(name: &str) -> Topic {
        Topic {
            name: name.to_owned(),
            events: Mutex::new(Vec::new()),
            end: watch::channel(0).0,
            groups: Mutex::new(HashMap::new()),
            deleted: AtomicBool::new(false),
        }
    }

    fn end(&self) -> u64 {
        *self.end.borrow()
    }
}

/// What a log and its subscriptions share.
#[derive(Debug, Default)]
struct Shared {
    faults: Faults,
    closed: AtomicBool,
}

/// An in-memory [`EventLog`]: topics of one partition, as in the embedded log. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct MemoryLog {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    shared: Arc<Shared>,
    dead_letters: Arc<MemoryDeadLetters>,
    state: Arc<MemoryState>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Arc<MemoryLog> {
        let shared = Arc::new(Shared::default());
        Arc::new(MemoryLog {
            topics: Mutex::new(HashMap::new()),
            dead_letters: Arc::new(MemoryDeadLetters { shared: Arc::clone(&shared), scopes: Mutex::default() }),
            state: Arc::new(MemoryState { shared: Arc::clone(&shared), entries: Mutex::default() }),
            shared,
        })
    }

    /// The failures to inject into this log, its subscriptions and its stores.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The committed position of `group` on `topic` (partition 0: the next offset the group
    /// reads), if both exist.
    pub fn committed(&self, topic: &str, group: &str) -> Option<u64> {
        let topic = lock(&self.topics).get(topic).cloned()?;
        let position = lock(&topic.groups).get(group).copied();
        position
    }

    /// Every event of `topic`, in offset order, if it exists.
    pub fn events(&self, topic: &str) -> Option<Vec<LogEvent>> {
        let topic = lock(&self.topics).get(topic).cloned()?;
        let events = lock(&topic.events).clone();
        Some(events)
    }

    /// Closes the log, as the embedded log's `close` does: later calls fail with
    /// [`LogError::Closed`], and open subscriptions return the events they have not read yet,
    /// then `Closed`.
    pub fn close(&self) {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        for topic in lock(&self.topics).values() {
            topic.end.send_modify(|_| {});
        }
    }

    fn ensure_open(&self) -> Result<(), LogError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.ensure_open()?;
        lock(&self.topics).get(name).cloned().ok_or_else(|| LogError::UnknownTopic(name.to_owned()))
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        Arc::clone(&self.dead_letters) as Arc<dyn DeadLetterStore>
    }

    fn state(&self) -> Arc<dyn StateStore> {
        Arc::clone(&self.state) as Arc<dyn StateStore>
    }

    async fn create_topic(&self, topic: &str) -> Result<(), LogError> {
        validate_topic(topic)?;
        self.ensure_open()?;
        lock(&self.topics).entry(topic.to_owned()).or_insert_with(|| Arc::new(Topic::new(topic)));
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), LogError> {
        validate_topic(topic)?;
        self.ensure_open()?;
        let Some(removed) = lock(&self.topics).remove(topic) else { return Ok(()) };
        // Its subscriptions still hold it: they must see it gone (`UnknownTopic`), and their
        // commits must find no group.
        {
            let mut groups = lock(&removed.groups);
            removed.deleted.store(true, Ordering::SeqCst);
            groups.clear();
        }
        removed.end.send_modify(|_| {});
        Ok(())
    }

    async fn append(&self, topic: &str, events: &[Event]) -> Result<(), LogError> {
        self.shared.faults.check(Fault::Append, &format!("append to topic '{topic}'"))?;
        let t = self.topic(topic)?;
        if events.is_empty() {
            return Ok(());
        }
        let timestamp_ms = now_ms();
        let mut stored = lock(&t.events);
        // Deleted between the lookup and here: as the embedded log says once its writer stopped.
        if t.deleted.load(Ordering::SeqCst) {
            return Err(LogError::UnknownTopic(topic.to_owned()));
        }
        for event in events {
            let offset = stored.len() as u64;
            stored.push(LogEvent::new(Position { partition: 0, offset }, timestamp_ms, Arc::new(event.clone())));
        }
        // Under the lock, so that readers see ends in offset order.
        t.end.send_replace(stored.len() as u64);
        Ok(())
    }

    async fn create_group(&self, topic: &str, group: &str) -> Result<(), LogError> {
        self.shared.faults.check(Fault::CreateGroup, &format!("creation of group '{group}' of topic '{topic}'"))?;
        let t = self.topic(topic)?;
        // The end is read under the groups lock, which appends do not take: an append that
        // returned before this call is below the end, one that returns after may be too (it is
        // then read, never skipped).
        let mut groups = lock(&t.groups);
        // Deleted since the lookup: its groups are cleared under this lock, so none may appear.
        if t.deleted.load(Ordering::SeqCst) {
            return Err(LogError::UnknownTopic(topic.to_owned()));
        }
        let end = t.end();
        groups.entry(group.to_owned()).or_insert(end);
        Ok(())
    }

    async fn delete_group(&self, topic: &str, group: &str) -> Result<(), LogError> {
        self.ensure_open()?;
        let t = lock(&self.topics).get(topic).cloned();
        if let Some(t) = t {
            lock(&t.groups).remove(group);
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, LogError> {
        self.shared.faults.check(Fault::Subscribe, &format!("subscribe to group '{group}' of topic '{topic}'"))?;
        let t = self.topic(topic)?;
        let cursor = lock(&t.groups)
            .get(group)
            .copied()
            .ok_or_else(|| LogError::UnknownGroup { topic: topic.to_owned(), group: group.to_owned() })?;
        Ok(Box::new(MemorySubscription::new(t, Some(group.to_owned()), cursor, Arc::clone(&self.shared))))
    }

    async fn reader(&self, topic: &str, partition: u32, offset: u64) -> Result<Box<dyn Subscription>, LogError> {
        let t = self.topic(topic)?;
        check_partition(partition)?;
        Ok(Box::new(MemorySubscription::new(t, None, offset, Arc::clone(&self.shared))))
    }

    async fn flush(&self) -> Result<(), LogError> {
        // Commits take effect at once.
        self.ensure_open()
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, LogError> {
        Ok(vec![self.topic(topic)?.end()])
    }
}

fn check_partition(partition: u32) -> Result<(), LogError> {
    if partition != 0 {
        return Err(invalid_input(format!("unknown partition {partition}: the in-memory log has only partition 0")));
    }
    Ok(())
}

/// A group's subscription (`group` set) or a reader (`group` empty) of a [`MemoryLog`] topic.
struct MemorySubscription {
    topic: Arc<Topic>,
    group: Option<String>,
    /// The offset of the next event to return.
    cursor: u64,
    end: watch::Receiver<u64>,
    shared: Arc<Shared>,
}

impl MemorySubscription {
    fn new(topic: Arc<Topic>, group: Option<String>, cursor: u64, shared: Arc<Shared>) -> MemorySubscription {
        let end = topic.end.subscribe();
        MemorySubscription { topic, group, cursor, end, shared }
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<LogEvent>, LogError> {
        self.shared.faults.check(Fault::Read, &format!("read of topic '{}'", self.topic.name))?;
        if max == 0 {
            return Ok(Vec::new());
        }
        loop {
            if self.topic.deleted.load(Ordering::SeqCst) {
                return Err(LogError::UnknownTopic(self.topic.name.clone()));
            }
            // Marked seen before looking, so that an append after the look wakes `changed`.
            let end = *self.end.borrow_and_update();
            if self.cursor < end {
                let from = usize::try_from(self.cursor).unwrap_or(usize::MAX);
                let batch: Vec<LogEvent> = lock(&self.topic.events).iter().skip(from).take(max).cloned().collect();
                // Nothing is awaited between taking the batch and moving the cursor: a future
                // dropped at the `changed` below has taken nothing (cancel safety).
                if let Some(last) = batch.last() {
                    self.cursor = last.position.offset + 1;
                    return Ok(batch);
                }
            }
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(LogError::Closed);
            }
            if self.end.changed().await.is_err() {
                // The sender lives as long as the topic, which this subscription holds.
                return Err(LogError::Closed);
            }
        }
    }

    fn commit(&mut self, partition: u32, next_offset: u64) -> Result<(), LogError> {
        check_partition(partition)?;
        let Some(group) = &self.group else {
            return Err(invalid_input(format!(
                "a reader of topic '{}' without a group cannot commit",
                self.topic.name
            )));
        };
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        self.shared
            .faults
            .check(Fault::Commit, &format!("commit of group '{group}' on topic '{}'", self.topic.name))?;
        match lock(&self.topic.groups).get_mut(group) {
            Some(position) => {
                *position = next_offset;
                Ok(())
            }
            None => Err(LogError::UnknownGroup { topic: self.topic.name.clone(), group: group.clone() }),
        }
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), LogError> {
        check_partition(partition)?;
        self.cursor = offset;
        Ok(())
    }

    fn position(&self, partition: u32) -> Option<u64> {
        (partition == 0).then_some(self.cursor)
    }
}

/// The in-memory [`DeadLetterStore`] of a [`MemoryLog`]. Ids are a scope's counter as 20
/// decimal digits, as in the embedded log: they sort as stored, and are never reused.
#[derive(Debug)]
pub struct MemoryDeadLetters {
    shared: Arc<Shared>,
    scopes: Mutex<HashMap<String, Scope>>,
}

/// One scope's entries, and the last id it assigned (kept when entries go).
#[derive(Debug, Default)]
struct Scope {
    last_id: u64,
    entries: BTreeMap<String, DeadLetter>,
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetters {
    async fn put(&self, scope: &str, mut entry: DeadLetter) -> Result<String, LogError> {
        self.shared.faults.check(Fault::DeadLetterPut, &format!("dead letter of scope '{scope}'"))?;
        let mut scopes = lock(&self.scopes);
        let stored = scopes.entry(scope.to_owned()).or_default();
        let next = stored
            .last_id
            .checked_add(1)
            .ok_or_else(|| LogError::Unavailable(format!("dead-letter ids of scope '{scope}' are exhausted")))?;
        stored.last_id = next;
        let id = format!("{next:020}");
        entry.id.clone_from(&id);
        stored.entries.insert(id.clone(), entry);
        Ok(id)
    }

    async fn list(&self, scope: &str, after: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        let scopes = lock(&self.scopes);
        let Some(stored) = scopes.get(scope) else { return Ok(Vec::new()) };
        let entries = stored.entries.iter().filter(|(id, _)| after.is_none_or(|after| id.as_str() > after));
        Ok(entries.take(limit).map(|(_, entry)| entry.clone()).collect())
    }

    async fn get(&self, scope: &str, id: &str) -> Result<Option<DeadLetter>, LogError> {
        Ok(lock(&self.scopes).get(scope).and_then(|stored| stored.entries.get(id)).cloned())
    }

    async fn remove(&self, scope: &str, id: &str) -> Result<bool, LogError> {
        Ok(lock(&self.scopes).get_mut(scope).is_some_and(|stored| stored.entries.remove(id).is_some()))
    }

    async fn purge(&self, scope: &str) -> Result<u64, LogError> {
        let mut scopes = lock(&self.scopes);
        let Some(stored) = scopes.get_mut(scope) else { return Ok(0) };
        let purged = stored.entries.len() as u64;
        stored.entries.clear();
        Ok(purged)
    }
}

/// The in-memory [`StateStore`] of a [`MemoryLog`].
#[derive(Debug)]
pub struct MemoryState {
    shared: Arc<Shared>,
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

#[async_trait]
impl StateStore for MemoryState {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        Ok(lock(&self.entries).get(key).cloned())
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), LogError> {
        self.shared.faults.check(Fault::StateWrite, &format!("put of state key '{key}'"))?;
        lock(&self.entries).insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), LogError> {
        self.shared.faults.check(Fault::StateWrite, &format!("removal of state key '{key}'"))?;
        lock(&self.entries).remove(key);
        Ok(())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let entries = lock(&self.entries);
        let matching = entries.range(prefix.to_owned()..).take_while(|(key, _)| key.starts_with(prefix));
        Ok(matching.map(|(key, value)| (key.clone(), value.clone())).collect())
    }
}

/// An in-memory [`DeclarationLog`]: every change published is kept (uncompacted) and sent to
/// the receiver that [`changes`](DeclarationLog::changes) handed out.
///
/// Changes published before `changes` is called make up its replay, which is how a test
/// seeds the declarations a node finds when it starts.
#[derive(Debug, Default)]
pub struct MemoryDeclarations {
    state: Mutex<DeclarationState>,
}

#[derive(Debug, Default)]
struct DeclarationState {
    /// Every change, at the index of its sequence number.
    published: Vec<Change>,
    /// Where changes go once `changes` was called (`None` before, and after the receiver went).
    sender: Option<mpsc::UnboundedSender<Change>>,
    taken: bool,
}

impl MemoryDeclarations {
    /// An empty declaration log.
    pub fn new() -> Arc<MemoryDeclarations> {
        Arc::new(MemoryDeclarations::default())
    }

    /// Every change published so far, in sequence order.
    pub fn published(&self) -> Vec<Change> {
        lock(&self.state).published.clone()
    }
}

#[async_trait]
impl DeclarationLog for MemoryDeclarations {
    async fn publish(&self, key: &str, value: Option<Vec<u8>>) -> Result<u64, LogError> {
        let mut state = lock(&self.state);
        let sequence = state.published.len() as u64;
        let change = Change { sequence, key: key.to_owned(), value };
        state.published.push(change.clone());
        // Sent under the lock, so that the receiver gets changes in sequence order. A receiver
        // that went away loses nothing durable: the change is kept.
        if let Some(sender) = &state.sender {
            if sender.send(change).is_err() {
                state.sender = None;
            }
        }
        Ok(sequence)
    }

    fn changes(&self) -> Result<Changes, LogError> {
        let mut state = lock(&self.state);
        if std::mem::replace(&mut state.taken, true) {
            return Err(invalid_input("the changes of the in-memory declaration log were already taken".to_owned()));
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        for change in &state.published {
            // The receiver is right here: sending cannot fail.
            let _ = sender.send(change.clone());
        }
        let replayed = state.published.len() as u64;
        state.sender = Some(sender);
        Ok(Changes { receiver, replayed })
    }
}

/// A [`Backend`] of `log` and `declarations`, on one node ([`SingleNode`]).
pub fn backend(log: &Arc<MemoryLog>, declarations: &Arc<MemoryDeclarations>) -> Backend {
    Backend {
        log: Arc::clone(log) as Arc<dyn EventLog>,
        declarations: Arc::clone(declarations) as Arc<dyn DeclarationLog>,
        placement: Arc::new(SingleNode::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{sample_dead_letter, sample_event};

    fn event(id: &str) -> Event {
        sample_event(id, 8)
    }

    fn ids(events: &[LogEvent]) -> Vec<(u64, String)> {
        events.iter().map(|e| (e.position.offset, e.event.id().to_owned())).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn injected_append_failures_fail_that_many_appends_and_change_nothing() {
        let log = MemoryLog::new();
        log.create_topic("t").await.unwrap();
        log.faults().fail_next(Fault::Append, 2);
        for _ in 0..2 {
            let error = log.append("t", &[event("lost")]).await.unwrap_err();
            assert!(matches!(error, LogError::Unavailable(_)), "{error}");
            assert!(error.to_string().contains("'t'"), "{error}");
        }
        assert_eq!(log.faults().remaining(Fault::Append), 0);
        log.append("t", &[event("kept")]).await.unwrap();
        assert_eq!(log.end_offsets("t").await.unwrap(), [1]);
        assert_eq!(ids(&log.events("t").unwrap()), [(0, "kept".to_owned())]);
    }

    #[tokio::test(start_paused = true)]
    async fn injected_dead_letter_failures_then_puts_succeed() {
        let log = MemoryLog::new();
        let store = log.dead_letters();
        log.faults().fail_next(Fault::DeadLetterPut, 3);
        for _ in 0..3 {
            assert!(matches!(store.put("ns/t", sample_dead_letter("e", 1)).await, Err(LogError::Unavailable(_))));
        }
        let id = store.put("ns/t", sample_dead_letter("e", 1)).await.unwrap();
        assert_eq!(id, "00000000000000000001", "failed puts use no id");
        assert_eq!(store.list("ns/t", None, 10).await.unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn commits_are_visible_and_injected_commit_failures_keep_the_position() {
        let log = MemoryLog::new();
        log.create_topic("t").await.unwrap();
        log.append("t", &[event("before")]).await.unwrap();
        log.create_group("t", "g").await.unwrap();
        assert_eq!(log.committed("t", "g"), Some(1), "a group starts at the end");
        assert_eq!(log.committed("t", "nope"), None);
        log.append("t", &[event("a"), event("b")]).await.unwrap();
        let mut sub = log.subscribe("t", "g").await.unwrap();
        assert_eq!(ids(&sub.next_batch(10).await.unwrap()), [(1, "a".to_owned()), (2, "b".to_owned())]);
        sub.commit(0, 2).unwrap();
        assert_eq!(log.committed("t", "g"), Some(2));
        log.faults().fail_next(Fault::Commit, 1);
        assert!(matches!(sub.commit(0, 3), Err(LogError::Unavailable(_))));
        assert_eq!(log.committed("t", "g"), Some(2));
        sub.commit(0, 3).unwrap();
        assert_eq!(log.committed("t", "g"), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn an_injected_read_failure_fails_one_batch_and_loses_nothing() {
        let log = MemoryLog::new();
        log.create_topic("t").await.unwrap();
        log.create_group("t", "g").await.unwrap();
        let mut sub = log.subscribe("t", "g").await.unwrap();
        log.faults().fail_next(Fault::Read, 1);
        assert!(matches!(sub.next_batch(10).await, Err(LogError::Unavailable(_))), "fails without waiting");
        log.append("t", &[event("a")]).await.unwrap();
        assert_eq!(ids(&sub.next_batch(10).await.unwrap()), [(0, "a".to_owned())]);
    }

    #[tokio::test(start_paused = true)]
    async fn next_batch_wakes_on_append_under_paused_time() {
        let log = MemoryLog::new();
        log.create_topic("t").await.unwrap();
        log.create_group("t", "g").await.unwrap();
        let mut sub = log.subscribe("t", "g").await.unwrap();
        let appender = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                log.append("t", &[event("late")]).await
            })
        };
        let started = tokio::time::Instant::now();
        assert_eq!(ids(&sub.next_batch(10).await.unwrap()), [(0, "late".to_owned())]);
        assert!(started.elapsed() >= std::time::Duration::from_secs(3600));
        appender.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn deletion_and_close_end_subscriptions() {
        let log = MemoryLog::new();
        log.create_topic("t").await.unwrap();
        log.create_group("t", "g").await.unwrap();
        let mut sub = log.subscribe("t", "g").await.unwrap();
        let waiting = tokio::spawn(async move { sub.next_batch(10).await.map(|_| ()) });
        tokio::task::yield_now().await;
        log.delete_topic("t").await.unwrap();
        assert!(matches!(waiting.await.unwrap(), Err(LogError::UnknownTopic(t)) if t == "t"));

        log.create_topic("t").await.unwrap();
        log.create_group("t", "g").await.unwrap();
        log.append("t", &[event("a")]).await.unwrap();
        let mut sub = log.subscribe("t", "g").await.unwrap();
        log.close();
        assert_eq!(ids(&sub.next_batch(10).await.unwrap()), [(0, "a".to_owned())], "what was there is read");
        assert!(matches!(sub.next_batch(10).await, Err(LogError::Closed)));
        assert!(matches!(log.append("t", &[event("b")]).await, Err(LogError::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn readers_refuse_commits_and_other_partitions() {
        let log = MemoryLog::new();
        log.create_topic("t").await.unwrap();
        let error = log.reader("t", 1, 0).await.err().unwrap();
        assert!(error.to_string().contains("partition 1"), "{error}");
        let mut reader = log.reader("t", 0, 0).await.unwrap();
        let error = reader.commit(0, 1).unwrap_err();
        assert!(error.to_string().contains("'t'"), "{error}");
        let error = log.create_topic("Bad_Name").await.unwrap_err();
        assert!(error.to_string().contains("'Bad_Name'"), "{error}");
    }

    #[tokio::test]
    async fn declarations_replay_then_follow() {
        let declarations = MemoryDeclarations::new();
        assert_eq!(declarations.publish("broker/ns/a", Some(b"1".to_vec())).await.unwrap(), 0);
        let Changes { mut receiver, replayed } = declarations.changes().unwrap();
        assert_eq!(replayed, 1);
        assert!(declarations.changes().is_err(), "a second call fails");
        assert_eq!(declarations.publish("broker/ns/a", None).await.unwrap(), 1);
        let first = receiver.recv().await.unwrap();
        assert_eq!(first, Change { sequence: 0, key: "broker/ns/a".to_owned(), value: Some(b"1".to_vec()) });
        let second = receiver.recv().await.unwrap();
        assert_eq!(second, Change { sequence: 1, key: "broker/ns/a".to_owned(), value: None });
        drop(receiver);
        assert_eq!(declarations.publish("broker/ns/b", Some(Vec::new())).await.unwrap(), 2, "kept without a receiver");
        assert_eq!(declarations.published().len(), 3);
    }
}
