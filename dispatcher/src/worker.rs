//! One trigger's loop: take its matching events — from the broker's shared fanout while
//! attached, or by reading the log itself (at start, behind, or detached for being slow) — hand
//! each to a delivery task (in order per partition key when ordered), and commit only the
//! watermark below which every event has a final outcome.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::Ordering as AtomicOrdering;

use switchyard_log::{DeadLetter, LogError, LogEvent, Position, Subscription};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::delivery::{self, Context};
use crate::fanout::{Attachment, Fanout, Fanouts};
use crate::tracker::Tracker;
use crate::{Ordering, Progress};

/// Events read per batch.
const BATCH: usize = 256;
/// How far reading may run ahead of the watermark, in deliveries' worth: ten times
/// `maxInFlight`, within these bounds. Bounds memory with a stalled subscriber (the backlog
/// stays in the log, not in RAM) and the replay after a crash.
const MIN_WINDOW: u64 = 1_000;
const MAX_WINDOW: u64 = 10_000;
/// Pause after a log read error before trying again.
const READ_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How often an attached trigger catches up with the fanout's position.
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

pub(crate) async fn run(
    ctx: Arc<Context>,
    progress: Arc<Mutex<Progress>>,
    fanouts: Arc<Fanouts>,
    mut stop: watch::Receiver<Stop>,
    mut redrives: mpsc::UnboundedReceiver<Redrive>,
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
    let window = (10 * u64::from(ctx.plan.delivery.max_in_flight)).clamp(MIN_WINDOW, MAX_WINDOW);
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
    tracing::info!(trigger = %ctx.scope(), subscriber = %ctx.plan.subscriber, "trigger started");
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
            batch = subscription.next_batch(BATCH), if room && reading => match batch {
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
                    state.take(pushed.position, pushed.timestamp_ms, pushed.event);
                }
                source = state.sync(source, position.as_mut(), &mut *subscription);
            }
            // Progress past events this trigger does not want is picked up now and then rather
            // than on every move of the fanout, which would wake thousands of idle triggers per
            // batch.
            _ = progress.tick(), if room && !reading => {
                if position.as_ref().is_some_and(|p| p.has_changed().is_err()) {
                    // The fanout stopped (its topic is being deleted): read alone.
                    position = None;
                }
                source = state.sync(source, position.as_mut(), &mut *subscription);
            }
        }
        while state.deliveries.try_join_next().is_some() {}
    }
    if let Some(fanout) = &fanout {
        fanout.detach(ctx.scope());
    }
    let stop_mode = *stop.borrow();
    if let Stop::Graceful(grace) = stop_mode {
        state.drain(grace, &mut *subscription).await;
    }
    state.deliveries.abort_all();
    tracing::info!(trigger = %ctx.scope(), in_flight = state.deliveries.len(), "trigger stopped");
}

/// Joins the broker's fanout from where this trigger has read up to, so the log is read once
/// for all triggers. Below the fanout's position, the trigger catches up alone first.
async fn attach(ctx: &Context, fanouts: &Fanouts, state: &State) -> Option<(Source, Fanout)> {
    let from = state.read_upto();
    let fanout = fanouts.get(&ctx.log, &ctx.trigger.topic, from);
    let filter = Arc::new(ctx.plan.filter.clone());
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

async fn next_pushed(source: &mut Source) -> Option<crate::fanout::Pushed> {
    match source {
        Source::Attached { attachment } => attachment.queue.recv().await,
        _ => std::future::pending().await,
    }
}

struct State {
    ctx: Arc<Context>,
    /// What the backlog metrics see of this worker.
    progress: Arc<Mutex<Progress>>,
    trackers: HashMap<u32, Tracker>,
    committed: HashMap<u32, u64>,
    /// Ordered mode: events waiting behind an earlier event of the same key.
    waiting: HashMap<String, VecDeque<LogEvent>>,
    /// Ordered mode: keys with an event being delivered.
    busy_keys: HashSet<String>,
    completions: mpsc::UnboundedReceiver<Done>,
    completions_tx: mpsc::UnboundedSender<Done>,
    deliveries: JoinSet<()>,
}

impl State {
    fn new(ctx: Arc<Context>, progress: Arc<Mutex<Progress>>) -> State {
        let (completions_tx, completions) = mpsc::unbounded_channel();
        State {
            ctx,
            progress,
            trackers: HashMap::new(),
            committed: HashMap::new(),
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
        self.trackers.entry(partition).or_insert_with(|| Tracker::new(first))
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
            if self.ctx.plan.filter.matches(&log_event.event) {
                self.take(position, log_event.timestamp_ms, log_event.event);
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
                Ok(pushed) => self.take(pushed.position, pushed.timestamp_ms, pushed.event),
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

    /// A matching event: deliver it now, or queue it behind its key in ordered mode.
    fn take(&mut self, position: Position, timestamp_ms: i64, event: Arc<switchyard_event::Event>) {
        self.tracker(position.partition, position.offset).track(position.offset, timestamp_ms);
        let log_event = LogEvent { position, timestamp_ms, event };
        match self.ctx.plan.delivery.ordering {
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
            delivery::deliver(&ctx, &log_event.event).await;
            // The worker may be gone (trigger deleted); then nothing is committed, as intended.
            let _ = done.send(Done { position: log_event.position, key });
        });
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
        for (&partition, tracker) in &self.trackers {
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

    /// Lets in-flight deliveries finish for up to `grace`, committing as they do.
    async fn drain(&mut self, grace: Duration, subscription: &mut dyn Subscription) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.deliveries.is_empty() {
            tokio::select! {
                _ = self.deliveries.join_next() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        while let Ok(done) = self.completions.try_recv() {
            self.mark_done(done.position);
        }
        self.commit(subscription);
    }
}

/// Redelivers dead letters, at most `maxInFlight` at a time, reading the store page by page so
/// that a large store is not loaded into memory.
async fn redrive(ctx: Arc<Context>, selection: Redrive) {
    let scope = ctx.scope();
    let mut tasks = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.plan.delivery.max_in_flight.max(1) as usize));
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
            let fresh = ctx.redriving.lock().unwrap_or_else(|e| e.into_inner()).insert(entry.id.clone());
            if !fresh {
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let ctx = ctx.clone();
            tasks.spawn(async move {
                delivery::redrive(&ctx, entry).await;
                drop(slot);
            });
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
}
