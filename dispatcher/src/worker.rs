//! One trigger's delivery loop: read its group, filter, deliver concurrently, and commit only
//! the watermark below which every event has a final outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_log::{EventLog, LogError, LogEvent, Position, Subscription};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::policy::Verdict;
use crate::tracker::Tracker;
use crate::{Sender, TriggerConfig};

/// Events read per batch.
const BATCH: usize = 256;
/// How far reading may run ahead of the watermark. Bounds memory with a stalled subscriber:
/// the backlog stays in the log, not in RAM.
const MAX_WINDOW: usize = 10_000;
/// Pause after a log read error before trying again.
const READ_ERROR_PAUSE: Duration = Duration::from_secs(1);

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

pub(crate) async fn run(
    config: Arc<TriggerConfig>,
    log: Arc<dyn EventLog>,
    sender: Sender,
    mut stop: watch::Receiver<Stop>,
) {
    let mut subscription = loop {
        match log.subscribe(&config.topic, &config.group).await {
            Ok(subscription) => break subscription,
            Err(error) => {
                tracing::warn!(trigger = %config.key(), %error, "cannot subscribe; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(READ_ERROR_PAUSE) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    let mut state = State::new(config.clone(), sender);
    tracing::info!(trigger = %config.key(), subscriber = %config.target.url, "trigger started");
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(position) = state.completions.recv() => state.complete(position, &mut *subscription),
            batch = subscription.next_batch(BATCH), if state.window() < MAX_WINDOW => match batch {
                Ok(batch) => {
                    if !state.dispatch(batch, &mut *subscription, &mut stop).await {
                        break;
                    }
                }
                Err(LogError::UnknownTopic(_) | LogError::UnknownGroup { .. } | LogError::Closed) => break,
                Err(error) => {
                    tracing::warn!(trigger = %config.key(), %error, "log read failed; retrying");
                    tokio::time::sleep(READ_ERROR_PAUSE).await;
                }
            },
        }
    }
    let stop_mode = *stop.borrow();
    if let Stop::Graceful(grace) = stop_mode {
        state.drain(grace, &mut *subscription).await;
    }
    state.deliveries.abort_all();
    tracing::info!(trigger = %config.key(), in_flight = state.deliveries.len(), "trigger stopped");
}

struct State {
    config: Arc<TriggerConfig>,
    sender: Sender,
    trackers: HashMap<u32, Tracker>,
    committed: HashMap<u32, u64>,
    permits: Arc<Semaphore>,
    completions: mpsc::UnboundedReceiver<Position>,
    completions_tx: mpsc::UnboundedSender<Position>,
    deliveries: JoinSet<()>,
}

impl State {
    fn new(config: Arc<TriggerConfig>, sender: Sender) -> State {
        let (completions_tx, completions) = mpsc::unbounded_channel();
        State {
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            sender,
            trackers: HashMap::new(),
            committed: HashMap::new(),
            completions,
            completions_tx,
            deliveries: JoinSet::new(),
        }
    }

    fn window(&self) -> usize {
        self.trackers.values().map(Tracker::window).sum()
    }

    /// Tracks a batch and starts a delivery for every matching event. Returns false when asked
    /// to stop while waiting for a delivery slot.
    async fn dispatch(
        &mut self,
        batch: Vec<LogEvent>,
        subscription: &mut dyn Subscription,
        stop: &mut watch::Receiver<Stop>,
    ) -> bool {
        for log_event in batch {
            let position = log_event.position;
            self.trackers
                .entry(position.partition)
                .or_insert_with(|| Tracker::new(position.offset))
                .track(position.offset);
            if !self.config.filter.matches(&log_event.event) {
                self.mark_done(position);
                continue;
            }
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return false,
                },
                _ = stop.changed() => return false,
            };
            self.spawn_delivery(log_event, permit);
            while self.deliveries.try_join_next().is_some() {}
        }
        self.commit(subscription);
        true
    }

    fn spawn_delivery(&mut self, log_event: LogEvent, permit: OwnedSemaphorePermit) {
        let config = self.config.clone();
        let sender = self.sender.clone();
        let done = self.completions_tx.clone();
        self.deliveries.spawn(async move {
            deliver(&config, &sender, &log_event).await;
            drop(permit);
            // The worker may be gone (trigger deleted); then nothing is committed, as intended.
            let _ = done.send(log_event.position);
        });
    }

    fn mark_done(&mut self, position: Position) {
        if let Some(tracker) = self.trackers.get_mut(&position.partition) {
            tracker.complete(position.offset);
        }
    }

    fn complete(&mut self, position: Position, subscription: &mut dyn Subscription) {
        self.mark_done(position);
        while let Ok(position) = self.completions.try_recv() {
            self.mark_done(position);
        }
        self.commit(subscription);
    }

    fn commit(&mut self, subscription: &mut dyn Subscription) {
        for (&partition, tracker) in &self.trackers {
            let watermark = tracker.watermark();
            if self.committed.get(&partition) != Some(&watermark) {
                match subscription.commit(partition, watermark) {
                    Ok(()) => {
                        self.committed.insert(partition, watermark);
                    }
                    Err(error) => tracing::warn!(trigger = %self.config.key(), %error, "commit failed"),
                }
            }
        }
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
        while let Ok(position) = self.completions.try_recv() {
            self.mark_done(position);
        }
        self.commit(subscription);
    }
}

/// Attempts delivery until the subscriber accepts or the policy says otherwise.
async fn deliver(config: &TriggerConfig, sender: &Sender, log_event: &LogEvent) {
    let mut attempt = 1;
    loop {
        match sender.send(&config.target, &log_event.event).await {
            Ok(_) => {
                tracing::debug!(trigger = %config.key(), offset = log_event.position.offset, attempt, "delivered");
                return;
            }
            Err(failure) => {
                let Verdict::RetryAfter(wait) = config.retry.after_failure(attempt, &failure);
                tracing::debug!(
                    trigger = %config.key(), offset = log_event.position.offset, attempt,
                    %failure, wait_ms = wait.as_millis() as u64, "delivery failed; will retry"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}
