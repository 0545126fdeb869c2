//! One trigger's loop: take its matching events — from the broker's shared fanout while
//! attached, or by reading the log itself (at start, behind, or detached for being slow) — hand
//! each to a delivery task (in order per partition key when ordered), and commit only the
//! watermark below which every event has a final outcome.
//!
//! A record that could not be decoded is never filtered or delivered: it is moved to the
//! trigger's dead-letter store, which makes it final. [`supervise`] restarts the loop after a
//! panic, from the committed position.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::Ordering as AtomicOrdering;

use switchyard_log::{DeadLetter, LogError, LogEvent, Position, Subscription, UNDECODABLE_TYPE};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::delivery::{self, Context};
use crate::fanout::{Attachment, Fanout, Fanouts};
use crate::queue::{self, TryRecvError};
use crate::supervise::{catch_panic, FaultSlot, Restarts};
use crate::tracker::{Partitions, Tracker};
use crate::{metrics, Ordering, Progress};

/// Events read per batch.
const BATCH: usize = 256;
/// How far reading may run ahead of the watermark, in deliveries' worth: ten times
/// `maxInFlight`, within these bounds. Bounds memory with a stalled subscriber (the backlog
/// stays in the log, not in RAM) and the replay after a crash. It is checked before each take,
/// so it may be passed by what one take brings: a read batch (`BATCH`) or the fanout's queue.
const MIN_WINDOW: u64 = 1_000;
const MAX_WINDOW: u64 = 10_000;
/// Pause after a log read error before trying again.
const READ_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How often, at most, an attached trigger catches up with the fanout's position while it moves.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Dead letters fetched from the store per page while redriving.
const REDRIVE_PAGE: usize = 100;

/// How a worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Keep running.
    Run,
    /// Stop reading, give in-flight deliveries this long, commit, exit.
    Graceful(Duration),
    /// Exit now; in-flight deliveries are abandoned (and redelivered by whoever resumes).
    Abort,
}

/// Which dead letters to redrive.
#[derive(Debug, Clone)]
pub enum Redrive {
    /// Every entry in the trigger's store.
    All,
    /// These entries.
    Ids(Vec<String>),
}

/// A delivery that reached its final outcome.
struct Done {
    position: Position,
    /// The partition key it held, in ordered mode.
    key: Option<String>,
}

/// Where the worker's events come from.
enum Source {
    /// Its own reader over the log.
    Reading,
    /// Its own reader up to `until`, then the fanout's queue.
    CatchingUp { attachment: Attachment, until: u64 },
    /// The fanout's queue.
    Attached { attachment: Attachment },
}

/// Runs the trigger's loop until it is told to stop (or its topic or group is gone),
/// restarting it after a panic.
///
/// A panic drops the loop's state: its in-flight deliveries are abandoned (not final, so not
/// committed) and its fanout queue closes. After a doubling wait (see `supervise.rs`), during
/// which `fault` says why the trigger is not ready, the loop starts again from the committed
/// position, so nothing is skipped (at least once). Stop requests and redrives wait in their
/// channels meanwhile.
pub(crate) async fn supervise(
    ctx: Arc<Context>,
    progress: Arc<Mutex<Progress>>,
    fanouts: Arc<Fanouts>,
    mut stop: watch::Receiver<Stop>,
    mut redrives: queue::Receiver<Redrive>,
    fault: FaultSlot,
) {
    let mut restarts = Restarts::new("worker", "WorkerPanicked", fault);
    loop {
        // Boxed: held inline, the worker's state machine would be laid out twice in this one
        // (before and after it moves into `watch`), for each of thousands of triggers.
        let life = Box::pin(run(ctx.clone(), progress.clone(), fanouts.clone(), &mut stop, &mut redrives));
        let Err(message) = restarts.watch(life).await else { return };
        let wait = restarts.panicked(ctx.scope(), &message);
        if *stop.borrow() != Stop::Run {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn run(
    ctx: Arc<Context>,
    progress: Arc<Mutex<Progress>>,
    fanouts: Arc<Fanouts>,
    stop: &mut watch::Receiver<Stop>,
    redrives: &mut queue::Receiver<Redrive>,
) {
    let trigger = &ctx.trigger;
    let mut subscription = loop {
        match ctx.log.subscribe(&trigger.topic, &trigger.group).await {
            Ok(subscription) => break subscription,
            Err(error) => {
                tracing::warn!(trigger = %ctx.scope(), %error, "cannot subscribe; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(READ_ERROR_PAUSE) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    let mut state = State::new(ctx.clone(), progress);
    if let Some(start) = subscription.position(0) {
        state.tracker(0, start);
    }
    let window = (10 * u64::from(ctx.delivery.max_in_flight)).clamp(MIN_WINDOW, MAX_WINDOW);
    let mut source = Source::Reading;
    let mut fanout: Option<Fanout> = None;
    let mut position: Option<watch::Receiver<u64>> = None;
    // Join the fanout at once: reading alone costs every trigger a pass over the log, which
    // with thousands of triggers is the cost the fanout exists to avoid. Only the gap between
    // this trigger's position and the fanout's is read alone.
    let shareable = ctx.log.single_partition();
    let joined = if shareable { attach(&ctx, &fanouts, &state).await } else { None };
    if let Some((attached, joined)) = joined {
        source = attached;
        position = Some(joined.position.clone());
        fanout = Some(joined);
    }
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the fanout's position moved since the last catch-up. When it did not, the tick
    // is not polled (an interval not polled arms no timer): an idle trigger sleeps until the
    // fanout publishes, instead of waking every interval (10,000 triggers made 40,000 wake-ups
    // a second with no traffic).
    let mut ticking = true;
    tracing::info!(trigger = %ctx.scope(), subscriber = %switchyard_meta::secret::shown_url(ctx.subscriber().as_str()), "trigger started");
    loop {
        let room = state.window() < window;
        let reading = !matches!(source, Source::Attached { .. });
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(done) = state.completions.recv() => state.complete(done, &mut *subscription),
            Some(selection) = redrives.recv() => {
                state.deliveries.spawn(redrive(ctx.clone(), selection));
            }
            Some(ended) = state.deliveries.join_next(), if !state.deliveries.is_empty() => state.joined(ended),
            // In a block, so that the boxed read is made only when the branch is polled: a
            // disabled branch's future is still built, and each parked trigger would hold one.
            batch = async { subscription.next_batch(BATCH).await }, if room && reading => match batch {
                Ok(batch) => {
                    let caught_up = batch.len() < BATCH;
                    let until = match &source {
                        Source::CatchingUp { until, .. } => Some(*until),
                        _ => None,
                    };
                    state.read(batch, until, &mut *subscription);
                    if let Some(until) = until.filter(|until| state.read_upto() >= *until) {
                        state.advance(until, &mut *subscription);
                        if let Source::CatchingUp { attachment, .. } = std::mem::replace(&mut source, Source::Reading) {
                            source = Source::Attached { attachment };
                        }
                    } else if caught_up && until.is_none() && shareable {
                        if let Some((attached, joined)) = attach(&ctx, &fanouts, &state).await {
                            source = attached;
                            position = Some(joined.position.clone());
                            fanout = Some(joined);
                        }
                    }
                }
                Err(LogError::UnknownTopic(_) | LogError::UnknownGroup { .. } | LogError::Closed) => break,
                Err(error) => {
                    tracing::warn!(trigger = %ctx.scope(), %error, "log read failed; retrying");
                    tokio::time::sleep(READ_ERROR_PAUSE).await;
                }
            },
            pushed = next_pushed(&mut source), if room && !reading => {
                if let Some(pushed) = pushed {
                    state.take(pushed);
                }
                source = state.sync(source, position.as_mut(), &mut *subscription);
            }
            // Progress past events this trigger does not want is picked up now and then rather
            // than on every move of the fanout, which would wake thousands of idle triggers per
            // batch: the first move after a quiet spell wakes the trigger once, and from then
            // on it catches up every interval for as long as the position keeps moving.
            () = moved(&mut position), if room && !reading && !ticking => ticking = true,
            // Also while reading alone when a commit failed: it is tried again even if no
            // event comes to trigger one.
            _ = progress.tick(), if (room && !reading && ticking) || state.commit_owed() => {
                if position.as_ref().is_some_and(|p| p.has_changed().is_err()) {
                    // The fanout stopped (its topic is being deleted): read alone.
                    position = None;
                }
                let before = state.read_upto();
                source = state.sync(source, position.as_mut(), &mut *subscription);
                state.commit(&mut *subscription);
                ticking = state.read_upto() != before;
            }
        }
    }
    if let Some(fanout) = &fanout {
        fanout.detach(ctx.scope());
    }
    let stop_mode = *stop.borrow_and_update();
    if let Stop::Graceful(grace) = stop_mode {
        state.drain(grace, stop, &mut *subscription).await;
    }
    state.deliveries.abort_all();
    tracing::info!(trigger = %ctx.scope(), in_flight = state.deliveries.len(), "trigger stopped");
}

/// Joins the broker's fanout from where this trigger has read up to, so the log is read once
/// for all triggers. Below the fanout's position, the trigger catches up alone first.
async fn attach(ctx: &Context, fanouts: &Fanouts, state: &State) -> Option<(Source, Fanout)> {
    let from = state.read_upto();
    let fanout = fanouts.get(&ctx.log, &ctx.trigger.topic, from);
    let filter = ctx.filter.clone();
    let attachment = fanout.attach(ctx.scope(), filter, from).await?;
    tracing::debug!(trigger = %ctx.scope(), from, at = attachment.at, "attached to the fanout");
    let source = if attachment.at > from {
        let until = attachment.at;
        Source::CatchingUp { attachment, until }
    } else {
        Source::Attached { attachment }
    };
    Some((source, fanout))
}

/// Resolves when the fanout publishes a position not yet seen, or stops.
async fn moved(position: &mut Option<watch::Receiver<u64>>) {
    match position {
        Some(position) => {
            let _ = position.changed().await;
        }
        None => std::future::pending().await,
    }
}

async fn next_pushed(source: &mut Source) -> Option<LogEvent> {
    match source {
        Source::Attached { attachment } => attachment.queue.recv().await,
        _ => std::future::pending().await,
    }
}

struct State {
    ctx: Arc<Context>,
    /// What the backlog metrics see of this worker.
    progress: Arc<Mutex<Progress>>,
    trackers: Partitions<Tracker>,
    committed: Partitions<u64>,
    /// Ordered mode: events waiting behind an earlier event of the same key.
    waiting: HashMap<String, VecDeque<LogEvent>>,
    /// Ordered mode: keys with an event being delivered.
    busy_keys: HashSet<String>,
    completions: queue::Receiver<Done>,
    completions_tx: queue::Sender<Done>,
    deliveries: JoinSet<()>,
}

impl State {
    fn new(ctx: Arc<Context>, progress: Arc<Mutex<Progress>>) -> State {
        let (completions_tx, completions) = queue::unbounded();
        State {
            ctx,
            progress,
            trackers: Partitions::default(),
            committed: Partitions::default(),
            waiting: HashMap::new(),
            busy_keys: HashSet::new(),
            completions,
            completions_tx,
            deliveries: JoinSet::new(),
        }
    }

    fn window(&self) -> u64 {
        self.trackers.values().map(Tracker::window).sum()
    }

    /// How far partition 0 (the one the fanout serves) has been read.
    fn read_upto(&self) -> u64 {
        self.trackers.get(&0).map_or(0, Tracker::read_upto)
    }

    fn advance(&mut self, offset: u64, subscription: &mut dyn Subscription) {
        self.tracker(0, offset).advance(offset);
        self.commit(subscription);
    }

    fn tracker(&mut self, partition: u32, first: u64) -> &mut Tracker {
        self.trackers.get_or_insert_with(partition, || Tracker::new(first))
    }

    /// Events read by the worker itself: filtered here. With `until`, events from there on are
    /// left to the fanout.
    fn read(&mut self, batch: Vec<LogEvent>, until: Option<u64>, subscription: &mut dyn Subscription) {
        for log_event in batch {
            let position = log_event.position;
            if until.is_some_and(|until| position.offset >= until) {
                break;
            }
            self.tracker(position.partition, position.offset).advance(position.offset + 1);
            if log_event.undecodable.is_some() || self.ctx.filter.matches(&log_event.event) {
                self.take(log_event);
            }
        }
        self.commit(subscription);
    }

    /// Reconciles with the fanout after taking from the queue or seeing it move: reads the
    /// published position first, then drains the queue. An open, empty queue means every
    /// matching event below that position was received; a closed one means the fanout
    /// detached this trigger, which then reads the log itself from where it was detached.
    fn sync(
        &mut self,
        source: Source,
        position: Option<&mut watch::Receiver<u64>>,
        subscription: &mut dyn Subscription,
    ) -> Source {
        let Source::Attached { mut attachment } = source else { return source };
        let published = position.map(|p| *p.borrow_and_update());
        loop {
            match attachment.queue.try_recv() {
                Ok(pushed) => self.take(pushed),
                Err(TryRecvError::Empty) => {
                    if let Some(published) = published {
                        self.advance(published, subscription);
                        return Source::Attached { attachment };
                    }
                    // The fanout is gone: nothing more comes; read alone from here.
                    return self.read_alone(subscription);
                }
                Err(TryRecvError::Disconnected) => {
                    let detached_at = attachment.detached_at.load(AtomicOrdering::Acquire);
                    if detached_at != u64::MAX {
                        self.advance(detached_at, subscription);
                        tracing::info!(trigger = %self.ctx.scope(), detached_at, "fell behind: detached from the fanout, reading alone");
                    }
                    return self.read_alone(subscription);
                }
            }
        }
    }

    fn read_alone(&mut self, subscription: &mut dyn Subscription) -> Source {
        let from = self.read_upto();
        if let Err(error) = subscription.seek(0, from) {
            tracing::warn!(trigger = %self.ctx.scope(), %error, "cannot seek");
        }
        Source::Reading
    }

    /// A matching event: deliver it now, or queue it behind its key in ordered mode. An
    /// undecodable record is moved aside at once: it has no key, and holds none.
    fn take(&mut self, log_event: LogEvent) {
        let position = log_event.position;
        self.tracker(position.partition, position.offset).track(position.offset, log_event.timestamp_ms);
        if log_event.undecodable.is_some() {
            return self.spawn(log_event, None);
        }
        match self.ctx.delivery.ordering {
            Ordering::Unordered => self.spawn(log_event, None),
            Ordering::Ordered => {
                // Events without the extension share one key (the empty one).
                let key = log_event.event.get("partitionkey").map(|v| v.to_canonical_string().into_owned());
                let key = key.unwrap_or_default();
                if self.busy_keys.contains(&key) {
                    self.waiting.entry(key).or_default().push_back(log_event);
                } else {
                    self.busy_keys.insert(key.clone());
                    self.spawn(log_event, Some(key));
                }
            }
        }
    }

    fn spawn(&mut self, log_event: LogEvent, key: Option<String>) {
        let ctx = self.ctx.clone();
        let done = self.completions_tx.clone();
        self.deliveries.spawn(async move {
            match &log_event.undecodable {
                Some(why) => delivery::move_aside(&ctx, &log_event, why).await,
                None => delivery::deliver_read(&ctx, &log_event).await,
            }
            // The worker may be gone (trigger deleted); then nothing is committed, as intended.
            let _ = done.send(Done { position: log_event.position, key });
        });
    }

    /// A delivery or redrive task ended. Both catch their own panics, so one that escapes is a
    /// bug around them; it is never discarded: it is counted and passed on to the worker,
    /// whose supervisor logs it and restarts the worker from the committed position, so the
    /// offset the task held does not stay pending forever.
    fn joined(&self, ended: Result<(), tokio::task::JoinError>) {
        if let Err(error) = ended {
            if error.is_panic() {
                let message = crate::supervise::panic_message(error.into_panic().as_ref());
                metrics::task_panicked("delivery");
                panic!("a delivery task panicked: {message}");
            }
        }
    }

    /// Whether a commit failed and its watermark is still to be committed.
    fn commit_owed(&self) -> bool {
        self.trackers.iter().any(|(partition, tracker)| self.committed.get(partition) != Some(&tracker.watermark()))
    }

    fn mark_done(&mut self, position: Position) {
        if let Some(tracker) = self.trackers.get_mut(&position.partition) {
            tracker.complete(position.offset);
        }
    }

    fn complete(&mut self, done: Done, subscription: &mut dyn Subscription) {
        let mut next = Some(done);
        while let Some(done) = next {
            self.mark_done(done.position);
            if let Some(key) = done.key {
                self.release_key(key);
            }
            next = self.completions.try_recv().ok();
        }
        self.commit(subscription);
    }

    /// Ordered mode: the key's next event may go now that the previous one is final.
    fn release_key(&mut self, key: String) {
        let next = self.waiting.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some(log_event) => {
                if self.waiting.get(&key).is_some_and(VecDeque::is_empty) {
                    self.waiting.remove(&key);
                }
                self.spawn(log_event, Some(key));
            }
            None => {
                self.busy_keys.remove(&key);
            }
        }
    }

    fn commit(&mut self, subscription: &mut dyn Subscription) {
        for (&partition, tracker) in self.trackers.iter() {
            let watermark = tracker.watermark();
            if self.committed.get(&partition) != Some(&watermark) {
                match subscription.commit(partition, watermark) {
                    Ok(()) => {
                        self.committed.insert(partition, watermark);
                    }
                    Err(error) => tracing::warn!(trigger = %self.ctx.scope(), %error, "commit failed"),
                }
            }
        }
        let oldest_pending_ms = self.trackers.values().filter_map(Tracker::oldest_pending_ms).min();
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.committed.clone_from(&self.committed);
        progress.oldest_pending_ms = oldest_pending_ms;
    }

    /// Lets in-flight deliveries finish for up to `grace` (or until told to abort), committing
    /// as they do.
    async fn drain(&mut self, grace: Duration, stop: &mut watch::Receiver<Stop>, subscription: &mut dyn Subscription) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.deliveries.is_empty() {
            tokio::select! {
                Some(ended) = self.deliveries.join_next() => self.joined(ended),
                _ = tokio::time::sleep_until(deadline) => break,
                Ok(()) = stop.changed() => if *stop.borrow_and_update() == Stop::Abort { break },
            }
        }
        while let Ok(done) = self.completions.try_recv() {
            self.mark_done(done.position);
        }
        self.commit(subscription);
    }
}

/// Redelivers dead letters (see [`redrive_pages`]); a panic ends the redrive, logged and counted.
async fn redrive(ctx: Arc<Context>, selection: Redrive) {
    if let Err(message) = catch_panic(redrive_pages(&ctx, selection)).await {
        metrics::task_panicked("redrive");
        tracing::error!(trigger = %ctx.scope(), panic = %message, "redrive panicked; the dead letters stay in the store");
    }
}

/// Redelivers dead letters, at most `maxInFlight` at a time, reading the store page by page so
/// that a large store is not loaded into memory.
async fn redrive_pages(ctx: &Arc<Context>, selection: Redrive) {
    let scope = ctx.scope();
    let mut tasks = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.delivery.max_in_flight.max(1) as usize));
    let mut after: Option<String> = None;
    let mut ids = match &selection {
        Redrive::Ids(ids) => Some(ids.clone().into_iter()),
        Redrive::All => None,
    };
    loop {
        let page: Vec<DeadLetter> = match ids.as_mut() {
            Some(ids) => {
                let mut page = Vec::new();
                for id in ids.by_ref().take(REDRIVE_PAGE) {
                    match ctx.dead_letters.get(scope, &id).await {
                        Ok(Some(entry)) => page.push(entry),
                        Ok(None) => {}
                        Err(error) => tracing::error!(trigger = %scope, %id, %error, "cannot read dead letter"),
                    }
                }
                page
            }
            None => match ctx.dead_letters.list(scope, after.as_deref(), REDRIVE_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(trigger = %scope, %error, "cannot list dead letters; redrive stopped");
                    break;
                }
            },
        };
        if page.is_empty() {
            break;
        }
        after = page.last().map(|entry| entry.id.clone());
        for entry in page {
            if is_undecodable_stand_in(&entry.event) {
                tracing::info!(trigger = %scope, id = %entry.id, "not redriven: an undecodable record, not an event; it stays in the store");
                continue;
            }
            let fresh = ctx.redriving.lock().unwrap_or_else(|e| e.into_inner()).insert(entry.id.clone());
            if !fresh {
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let ctx = ctx.clone();
            tasks.spawn(async move {
                let id = entry.id.clone();
                if let Err(message) = catch_panic(delivery::redrive(&ctx, entry)).await {
                    metrics::task_panicked("redrive");
                    tracing::error!(trigger = %ctx.scope(), %id, panic = %message, "redrive panicked; the dead letter stays in the store");
                    ctx.redriving.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                }
                drop(slot);
            });
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// The stand-in a backend reads for a record that is not an event ([`LogEvent::undecodable`]):
/// delivering it would hand a subscriber bytes that are no event of theirs.
fn is_undecodable_stand_in(event: &switchyard_event::Event) -> bool {
    event.ty() == UNDECODABLE_TYPE && event.get("switchyardreason").is_some()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
    use std::sync::Arc;
    use std::time::Duration;

    use switchyard_log::testkit::memory::Fault;
    use switchyard_log::EventLog;
    use tokio::time::Instant;

    use super::{Redrive, MIN_WINDOW};
    use crate::fanout::QUEUE_CAPACITY;
    use crate::testing::{
        event, keyed, plan, wait_until, wait_until_async, Harness, Received, Reply, Subscriber, NAMESPACE, TOPIC,
        TRIGGER,
    };
    use crate::Ordering;

    const SECOND: Duration = Duration::from_secs(1);

    fn events(prefix: &str, n: usize) -> Vec<switchyard_event::Event> {
        (0..n).map(|i| event(&format!("{prefix}{i}"))).collect()
    }

    /// How many times each id was received.
    fn counts(received: &[Received]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for request in received {
            *counts.entry(request.id().to_owned()).or_default() += 1;
        }
        counts
    }

    #[tokio::test(start_paused = true)]
    async fn events_of_one_partition_key_go_one_after_another_while_other_keys_proceed() {
        let subscriber = Subscriber::start(|_| Reply::ok().after(SECOND)).await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |d| d.ordering = Ordering::Ordered)).await;
        let log_order = [("a1", "a"), ("b1", "b"), ("a2", "a"), ("x1", ""), ("a3", "a"), ("b2", "b"), ("x2", "")];
        let started = Instant::now();
        // Events without a partitionkey ("") share one key.
        h.append(&log_order.map(|(id, key)| if key.is_empty() { event(id) } else { keyed(id, key) })).await;
        h.wait_committed(7).await;
        let received = subscriber.at("/");
        let last = received.iter().filter_map(|r| r.answered).map(|(at, _)| at).max().unwrap();
        assert_eq!(last - started, 3 * SECOND, "three a's one after another, the rest beside them");
        let by_id: HashMap<&str, &Received> = received.iter().map(|r| (r.id(), r)).collect();
        for key in ["a", "b", ""] {
            let ids: Vec<&str> = log_order.iter().filter(|(_, k)| *k == key).map(|(id, _)| *id).collect();
            for pair in ids.windows(2) {
                let (earlier, later) = (by_id[pair[0]], by_id[pair[1]]);
                let (answered, _) = earlier.answered.unwrap();
                assert!(later.arrived >= answered, "{} sent before {} was answered", pair[1], pair[0]);
            }
        }
        // The first event of every key went out at once.
        for id in ["a1", "b1", "x1"] {
            assert_eq!(by_id[id].arrived, started, "{id} waited for another key");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unordered_deliveries_overlap() {
        let subscriber = Subscriber::start(|_| Reply::ok().after(SECOND)).await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |_| {})).await;
        let started = Instant::now();
        h.append(&[keyed("a1", "a"), keyed("a2", "a"), keyed("a3", "a")]).await;
        h.wait_committed(3).await;
        assert!(subscriber.at("/").iter().all(|r| r.arrived == started), "all sent at once");
    }

    #[tokio::test(start_paused = true)]
    async fn the_commit_waits_for_the_earliest_unfinished_event() {
        // e0 takes 5 s, the others 1 s: they finish first, but progress stays behind e0.
        let subscriber =
            Subscriber::start(|r| Reply::ok().after(if r.id() == "e0" { 5 * SECOND } else { SECOND })).await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |_| {})).await;
        h.append(&events("e", 5)).await;
        tokio::time::sleep(3 * SECOND).await;
        let answered = subscriber.at("/").iter().filter(|r| r.answered.is_some()).count();
        assert_eq!((answered, h.committed()), (4, 0));
        h.wait_committed(5).await;
    }

    #[tokio::test(start_paused = true)]
    async fn max_in_flight_bounds_attempts_and_a_retrying_event_holds_no_slot() {
        let subscriber = Subscriber::start(|r| match (r.id(), r.attempt) {
            ("e0", 1) => Reply::status(503),
            _ => Reply::ok().after(SECOND),
        })
        .await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |d| {
            d.max_in_flight = 2;
            d.retry.backoff = crate::retry::Backoff::Linear;
            d.retry.delay = 10 * SECOND;
        }))
        .await;
        let started = Instant::now();
        h.append(&events("e", 5)).await;
        h.wait_committed(5).await;
        let arrivals: Vec<(String, Duration)> =
            subscriber.at("/").iter().map(|r| (r.id().to_owned(), r.arrived - started)).collect();
        // e0 fails at once and waits 10 s without its slot, which e2 takes; then two at a time.
        let at = |secs: u64| Duration::from_secs(secs);
        let expected = [("e0", at(0)), ("e1", at(0)), ("e2", at(0)), ("e3", at(1)), ("e4", at(1))];
        assert_eq!(arrivals[..5], expected.map(|(id, t)| (id.to_owned(), t)), "{arrivals:?}");
        let retry = arrivals[5].1;
        assert!(arrivals[5].0 == "e0" && retry >= at(10) && retry <= at(11), "{arrivals:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_spaces_attempts_evenly() {
        let subscriber = Subscriber::accepting().await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |d| d.rate_limit = Some(4.0))).await;
        let started = Instant::now();
        h.append(&events("e", 5)).await;
        h.wait_committed(5).await;
        let arrivals: Vec<Duration> = subscriber.at("/").iter().map(|r| r.arrived - started).collect();
        let ms = Duration::from_millis;
        assert_eq!(arrivals, [ms(0), ms(250), ms(500), ms(750), ms(1000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_cannot_subscribe_retries_until_it_can() {
        let subscriber = Subscriber::accepting().await;
        let h = Harness::new().await;
        h.log.faults().fail_next(Fault::Subscribe, 3);
        h.append(&events("e", 2)).await;
        let started = Instant::now();
        h.start(plan(subscriber.url("/"), |_| {})).await;
        h.wait_committed(2).await;
        assert_eq!(h.log.faults().remaining(Fault::Subscribe), 0);
        assert_eq!(subscriber.at("/")[0].arrived - started, 3 * super::READ_ERROR_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_behind_the_fanout_reads_the_gap_alone_then_takes_from_the_fanout() {
        let subscriber = Subscriber::accepting().await;
        let h = Harness::new().await;
        // The second trigger's group exists from the start, so it begins at offset 0.
        h.log.create_group(TOPIC, "u").await.unwrap();
        h.start(plan(subscriber.url("/t"), |_| {})).await;
        h.append(&events("e", 300)).await;
        h.wait_committed(300).await;
        let fanout = h.dispatcher.fanouts.running(TOPIC).expect("the first trigger's fanout");
        assert_eq!(*fanout.position.borrow(), 300);
        let behind = crate::TriggerRef { name: "u".to_owned(), group: "u".to_owned(), ..crate::testing::trigger() };
        h.dispatcher.start(behind, plan(subscriber.url("/u"), |_| {})).await;
        // Appended while it catches up: its own reads find them, but they are the fanout's.
        h.append(&events("late", 20)).await;
        wait_until("u done", || h.log.committed(TOPIC, "u") == Some(320)).await;
        let counts = counts(&subscriber.at("/u"));
        assert_eq!(counts.len(), 320);
        assert!(counts.values().all(|&n| n == 1), "{:?}", counts.iter().find(|(_, &n)| n != 1));
        assert_eq!(fanout.attached().await, ["ns/t", "ns/u"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_trigger_commits_past_events_it_does_not_want_within_one_interval_of_their_arrival() {
        let subscriber = Subscriber::accepting().await;
        let h = Harness::new().await;
        let filter = crate::testing::of_type("wanted");
        h.start(crate::TriggerPlan { filter, ..plan(subscriber.url("/"), |_| {}) }).await;
        let mut end = 0;
        // Quiet spells long enough for the worker to stop catching up between them.
        for quiet in [SECOND, 60 * SECOND, 60 * SECOND] {
            tokio::time::sleep(quiet).await;
            let unwanted: Vec<_> = (0..5).map(|i| crate::testing::typed(&format!("e{end}-{i}"), "other")).collect();
            let appended = Instant::now();
            h.append(&unwanted).await;
            end += unwanted.len() as u64;
            h.wait_committed(end).await;
            // `wait_committed` looks every 10 ms.
            let took = appended.elapsed();
            assert!(took <= super::PROGRESS_INTERVAL + Duration::from_millis(10), "committed after {took:?}");
        }
        assert!(subscriber.at("/").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn backlogs_count_the_events_past_the_committed_position() {
        let subscriber =
            Subscriber::start(|r| if r.id() == "e2" { Reply::ok().after(60 * SECOND) } else { Reply::ok() }).await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |_| {})).await;
        h.append(&events("e", 10)).await;
        subscriber.wait_for("/", 10).await;
        tokio::time::sleep(SECOND).await;
        let backlogs = h.dispatcher.backlogs().await;
        assert_eq!(backlogs.len(), 1);
        assert_eq!((backlogs[0].namespace.as_str(), backlogs[0].name.as_str()), (NAMESPACE, TRIGGER));
        assert_eq!(backlogs[0].events, 8, "e2 and everything after it");
        h.wait_committed(10).await;
        let backlogs = h.dispatcher.backlogs().await;
        assert_eq!((backlogs[0].events, backlogs[0].oldest_age), (0, Duration::ZERO));
    }

    /// Starts a trigger whose subscriber holds `e0` for ten minutes and answers everything
    /// else at once, then appends `n` events.
    async fn stalled(n: usize) -> (Harness, Subscriber) {
        let subscriber =
            Subscriber::start(|r| if r.id() == "e0" { Reply::ok().after(600 * SECOND) } else { Reply::ok() }).await;
        let h = Harness::new().await;
        // maxInFlight 100: a window of MIN_WINDOW.
        h.start(plan(subscriber.url("/"), |d| d.max_in_flight = 100)).await;
        h.append(&events("e", n)).await;
        (h, subscriber)
    }

    #[tokio::test(start_paused = true)]
    async fn the_read_ahead_window_stops_taking_events_behind_a_stalled_one() {
        // Enough for a window and a queue.
        let n = MIN_WINDOW as usize + QUEUE_CAPACITY + 200;
        let (h, subscriber) = stalled(n).await;
        subscriber.wait_for("/", MIN_WINDOW as usize).await;
        tokio::time::sleep(60 * SECOND).await;
        let taken = subscriber.at("/").len() as u64;
        // The window is checked before each read (or take from the queue), which may bring up
        // to a queue's worth more.
        assert!(
            (MIN_WINDOW..=MIN_WINDOW + QUEUE_CAPACITY as u64).contains(&taken),
            "{taken} events taken past a stalled one"
        );
        assert_eq!(h.committed(), 0);
        tokio::time::sleep(300 * SECOND).await;
        assert_eq!(subscriber.at("/").len() as u64, taken, "still waiting");
        // Once e0 is answered, the rest follows.
        h.wait_committed(n as u64).await;
        assert_eq!(counts(&subscriber.at("/")).len(), n);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_that_falls_behind_is_detached_reads_alone_and_reattaches_without_loss_or_duplicates() {
        // More than the window and a full queue.
        let n = MIN_WINDOW as usize + QUEUE_CAPACITY + 200;
        let (h, subscriber) = stalled(n).await;
        subscriber.wait_for("/", MIN_WINDOW as usize).await;
        tokio::time::sleep(60 * SECOND).await;
        let fanout = h.dispatcher.fanouts.running(TOPIC).expect("the trigger joined its fanout");
        assert_eq!(fanout.attached().await, Vec::<String>::new(), "its queue filled: detached");
        h.wait_committed(n as u64).await;
        // Caught up by reading alone: back on the fanout, which brings the next events.
        wait_until_async("re-attached", || async { fanout.attached().await == ["ns/t"] }).await;
        h.append(&events("late", 10)).await;
        h.wait_committed(n as u64 + 10).await;
        let counts = counts(&subscriber.at("/"));
        assert_eq!(counts.len(), n + 10, "every event");
        assert!(counts.values().all(|&n| n == 1), "none twice: {:?}", counts.iter().find(|(_, &n)| n != 1));
        assert_eq!(fanout.attached().await, ["ns/t"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_trigger_is_detached_from_its_fanout() {
        let subscriber = Subscriber::accepting().await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |_| {})).await;
        h.append(&events("e", 3)).await;
        h.wait_committed(3).await;
        let fanout = h.dispatcher.fanouts.running(TOPIC).expect("the trigger joined its fanout");
        assert_eq!(fanout.attached().await, ["ns/t"]);
        h.dispatcher.stop(NAMESPACE, TRIGGER).await;
        assert_eq!(fanout.attached().await, Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_shutdown_lets_in_flight_deliveries_finish_and_commits() {
        let subscriber = Subscriber::start(|_| Reply::ok().after(2 * SECOND)).await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |_| {})).await;
        h.append(&events("e", 3)).await;
        subscriber.wait_for("/", 3).await;
        let stopping = Instant::now();
        h.dispatcher.shutdown(5 * SECOND).await;
        assert!(stopping.elapsed() < 2 * SECOND + 20 * Duration::from_millis(1), "{:?}", stopping.elapsed());
        assert_eq!(h.committed(), 3);
        assert!(subscriber.at("/").iter().all(|r| r.answered.is_some()));
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_shutdown_ends_at_the_grace_and_commits_only_what_finished() {
        let subscriber =
            Subscriber::start(|r| Reply::ok().after(if r.id() == "e0" { SECOND } else { 60 * SECOND })).await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |_| {})).await;
        h.append(&events("e", 2)).await;
        subscriber.wait_for("/", 2).await;
        let stopping = Instant::now();
        h.dispatcher.shutdown(5 * SECOND).await;
        assert_eq!(stopping.elapsed(), 5 * SECOND);
        assert_eq!(h.committed(), 1, "e0 finished, e1 did not");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_trigger_abandons_its_deliveries_uncommitted_and_a_new_worker_redelivers_them() {
        // Slow the first time, quick the next.
        let subscriber =
            Subscriber::start(|r| if r.attempt == 1 { Reply::ok().after(10 * SECOND) } else { Reply::ok() }).await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |_| {})).await;
        h.append(&events("e", 3)).await;
        subscriber.wait_for("/", 3).await;
        let stopping = Instant::now();
        h.dispatcher.stop(NAMESPACE, TRIGGER).await;
        assert!(stopping.elapsed() < SECOND, "stop does not wait: {:?}", stopping.elapsed());
        tokio::time::sleep(30 * SECOND).await;
        assert_eq!(h.committed(), 0, "abandoned deliveries are not final");
        // As after a crash: another worker resumes from the committed position.
        let restarted = Harness::dispatcher(&h.log, &h.admissions);
        restarted.start(crate::testing::trigger(), plan(subscriber.url("/"), |_| {})).await;
        h.wait_committed(3).await;
        let counts = counts(&subscriber.at("/"));
        assert_eq!(counts, [("e0", 2), ("e1", 2), ("e2", 2)].map(|(id, n)| (id.to_owned(), n)).into());
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_is_not_committed_until_the_dead_letter_store_has_it() {
        let subscriber = Subscriber::start(|r| if r.id() == "e1" { Reply::status(400) } else { Reply::ok() }).await;
        let h = Harness::new().await;
        // Fails for about 80 s (0.1 s doubling to 30 s between tries).
        h.log.faults().fail_next(Fault::DeadLetterPut, 10);
        h.start(plan(subscriber.url("/"), |d| d.retry.retries = 0)).await;
        h.append(&events("e", 5)).await;
        tokio::time::sleep(20 * SECOND).await;
        assert_eq!(subscriber.at("/").len(), 5, "the others are delivered meanwhile");
        assert!(h.log.faults().remaining(Fault::DeadLetterPut) > 0);
        assert!(h.dead_letters().await.is_empty());
        assert_eq!(h.committed(), 1, "stopped at e1");
        h.wait_committed(5).await;
        assert_eq!(h.log.faults().remaining(Fault::DeadLetterPut), 0);
        let stored: Vec<String> = h.dead_letters().await.iter().map(|e| e.event.id().to_owned()).collect();
        assert_eq!(stored, ["e1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn redrive_delivers_dead_letters_by_id_or_all_and_removes_them_once_delivered() {
        let healthy = Arc::new(AtomicBool::new(false));
        let up = healthy.clone();
        let subscriber =
            Subscriber::start(move |_| if up.load(AtomicOrdering::SeqCst) { Reply::ok() } else { Reply::status(400) })
                .await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |d| d.retry.retries = 0)).await;
        h.append(&events("e", 3)).await;
        h.wait_committed(3).await;
        let ids: Vec<String> = h.dead_letters().await.into_iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 3);

        // Still failing: the dead letters stay.
        assert!(h.dispatcher.redrive(NAMESPACE, TRIGGER, Redrive::All).await);
        subscriber.wait_for("/", 6).await;
        tokio::time::sleep(SECOND).await;
        assert_eq!(h.dead_letters().await.len(), 3);

        healthy.store(true, AtomicOrdering::SeqCst);
        assert!(h.dispatcher.redrive(NAMESPACE, TRIGGER, Redrive::Ids(vec![ids[1].clone(), "nope".into()])).await);
        subscriber.wait_for("/", 7).await;
        wait_until_async("e1 removed", || async { h.dead_letters().await.len() == 2 }).await;
        let left: Vec<String> = h.dead_letters().await.into_iter().map(|e| e.event.id().to_owned()).collect();
        assert_eq!(left, ["e0", "e2"]);
        assert_eq!(subscriber.ids("/").last().map(String::as_str), Some("e1"));

        assert!(h.dispatcher.redrive(NAMESPACE, TRIGGER, Redrive::All).await);
        wait_until_async("all removed", || async { h.dead_letters().await.is_empty() }).await;
        assert_eq!(
            counts(&subscriber.at("/")),
            [("e0", 3), ("e1", 3), ("e2", 3)].map(|(id, n)| (id.to_owned(), n)).into()
        );
        assert!(!h.dispatcher.redrive(NAMESPACE, "other", Redrive::All).await, "no such trigger");
    }
}

/// The at-least-once invariant, for random outcomes, completion orders and log faults: the
/// committed position never passes an event whose outcome is not final (delivered, taken by
/// the dead-letter sink, or in the dead-letter store), and it reaches the end of the log.
#[cfg(test)]
mod at_least_once {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;
    use switchyard_log::testkit::memory::{Fault, MemoryLog};
    use switchyard_log::EventLog;
    use tokio::time::Instant;

    use crate::retry::Backoff;
    use crate::testing::{event, keyed, plan, Harness, Reply, Subscriber, SCOPE};
    use crate::Ordering;

    /// What the subscriber does with one event.
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        /// Takes it after `delay_ms`.
        Delivered { delay_ms: u64 },
        /// Fails retryably `failures` times (within the retries), then takes it.
        Retried { failures: usize, delay_ms: u64 },
        /// Refuses it for good: dead-lettered.
        Refused { delay_ms: u64 },
    }

    #[derive(Debug, Clone)]
    struct Case {
        /// Each event's outcome and partition key.
        events: Vec<(Outcome, Option<&'static str>)>,
        /// Events from here on are appended later, while the first ones are in flight.
        later: usize,
        ordered: bool,
        max_in_flight: u32,
        /// A dead-letter sink that takes events (`Some(true)`) or fails (`Some(false)`).
        sink: Option<bool>,
        store_failures: u32,
        commit_failures: u32,
        read_failures: u32,
        /// When the trigger is replaced (its worker stopped gracefully and started again).
        restart_at_ms: Option<u64>,
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            (0u64..300).prop_map(|delay_ms| Outcome::Delivered { delay_ms }),
            (1usize..=3, 0u64..300).prop_map(|(failures, delay_ms)| Outcome::Retried { failures, delay_ms }),
            (0u64..300).prop_map(|delay_ms| Outcome::Refused { delay_ms }),
        ]
    }

    prop_compose! {
        fn case()(
            events in prop::collection::vec((outcome(), prop::option::of(prop::sample::select(vec!["a", "b", "c"]))), 1..40),
            later in 0usize..40,
            ordered in any::<bool>(),
            max_in_flight in 1u32..8,
            sink in prop::option::of(any::<bool>()),
            store_failures in 0u32..5,
            commit_failures in 0u32..4,
            read_failures in 0u32..3,
            restart_at_ms in prop::option::of(0u64..1500),
        ) -> Case {
            let later = later.min(events.len());
            Case { events, later, ordered, max_in_flight, sink, store_failures, commit_failures, read_failures, restart_at_ms }
        }
    }

    /// The ids whose outcome is final now.
    async fn finals(subscriber: &Subscriber, log: &MemoryLog) -> HashSet<String> {
        let mut ids = subscriber.accepted_ids();
        let stored = log.dead_letters().list(SCOPE, None, usize::MAX).await.unwrap();
        ids.extend(stored.iter().map(|entry| entry.event.id().to_owned()));
        ids
    }

    async fn run(case: Case) -> Result<(), TestCaseError> {
        let outcomes: Arc<Vec<Outcome>> = Arc::new(case.events.iter().map(|(outcome, _)| *outcome).collect());
        let sink_takes = case.sink == Some(true);
        let script = outcomes.clone();
        let subscriber = Subscriber::start(move |r| {
            if r.path == "/dls" {
                return if sink_takes { Reply::ok() } else { Reply::status(500) };
            }
            let index: usize = r.id().trim_start_matches('e').parse().unwrap();
            match script[index] {
                Outcome::Delivered { delay_ms } => Reply::ok().after(Duration::from_millis(delay_ms)),
                Outcome::Retried { failures, delay_ms } if r.attempt <= failures => {
                    Reply::status(503).after(Duration::from_millis(delay_ms))
                }
                Outcome::Retried { delay_ms, .. } => Reply::ok().after(Duration::from_millis(delay_ms)),
                Outcome::Refused { delay_ms } => Reply::status(422).after(Duration::from_millis(delay_ms)),
            }
        })
        .await;
        let h = Harness::new().await;
        let plan = plan(subscriber.url("/"), |d| {
            d.ordering = if case.ordered { Ordering::Ordered } else { Ordering::Unordered };
            d.max_in_flight = case.max_in_flight;
            d.retry.retries = 3;
            d.retry.backoff = Backoff::Linear;
            d.retry.delay = Duration::from_millis(50);
            d.dead_letter_sink = case.sink.map(|_| subscriber.url("/dls"));
        });
        let events: Vec<_> = case
            .events
            .iter()
            .enumerate()
            .map(|(i, (_, key))| match key {
                Some(key) => keyed(&format!("e{i}"), key),
                None => event(&format!("e{i}")),
            })
            .collect();
        let (first, second) = events.split_at(case.later);
        h.append(first).await;
        h.start(plan.clone()).await;
        h.log.faults().fail_next(Fault::DeadLetterPut, case.store_failures);
        h.log.faults().fail_next(Fault::Commit, case.commit_failures);
        h.log.faults().fail_next(Fault::Read, case.read_failures);
        let started = Instant::now();
        let mut appended = second.is_empty();
        let mut restarted = case.restart_at_ms.is_none();
        let end = events.len() as u64;
        loop {
            // Committed first: what is final only grows, so it is a superset of what was
            // final when that position was committed.
            let committed = h.committed();
            let finals = finals(&subscriber, &h.log).await;
            for offset in 0..committed {
                let id = format!("e{offset}");
                prop_assert!(finals.contains(&id), "committed {committed} past {id}, which is not final");
            }
            if committed == end && appended && restarted {
                break;
            }
            let elapsed = started.elapsed();
            prop_assert!(elapsed < Duration::from_secs(600), "stuck at {committed} of {end}");
            if !appended && elapsed >= Duration::from_millis(500) {
                h.append(second).await;
                appended = true;
            }
            if !restarted && elapsed >= Duration::from_millis(case.restart_at_ms.unwrap_or_default()) {
                // Replacing a trigger stops its worker gracefully, then starts a new one.
                h.start(plan.clone()).await;
                restarted = true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let finals = finals(&subscriber, &h.log).await;
        for (offset, (outcome, _)) in case.events.iter().enumerate() {
            let id = format!("e{offset}");
            prop_assert!(finals.contains(&id), "{id} ({outcome:?}) has no final outcome");
        }
        h.dispatcher.shutdown(Duration::from_secs(5)).await;
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn progress_never_passes_an_event_whose_outcome_is_not_final(case in case()) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
            runtime.block_on(run(case))?;
        }
    }
}
