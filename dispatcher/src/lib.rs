//! The dispatcher: for every trigger, read the broker's log through the trigger's own group,
//! filter, and deliver each matching event to the subscriber over HTTP, at least once.
//!
//! Each trigger runs its own worker with its own progress, so a slow or failing subscriber
//! never delays another trigger. A worker commits only its watermark: the lowest offset whose
//! outcome is not final. After a crash, a trigger resumes there, so every event that was not
//! delivered is delivered (duplicates are bounded by the in-flight window).
//!
//! The dispatcher knows the log only through [`switchyard_log::EventLog`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_log::EventLog;
use tokio::sync::{mpsc, watch, Mutex, Semaphore};
use tokio::task::JoinHandle;

mod delivery;
mod fanout;
pub mod filter;
pub mod index;
pub mod metrics;
pub mod policy;
pub mod sender;
mod tracker;
mod worker;

pub use filter::Filter;
pub use policy::{Failure, RetryPolicy, Verdict};
pub use sender::{Format, Sender, Target};
pub use worker::Redrive;
use worker::Stop;

/// Delivery order within a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Up to `max_in_flight` events at once, in any order.
    #[default]
    Unordered,
    /// Events with the same `partitionkey` strictly in log order: the next is sent only once
    /// the previous is delivered or dead-lettered. Other keys proceed meanwhile.
    Ordered,
}

/// A trigger's progress as its worker last committed it, for the backlog metrics.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Committed position per partition.
    committed: HashMap<u32, u64>,
    /// When the oldest event read and not yet final was appended (ms since the Unix epoch).
    oldest_pending_ms: Option<i64>,
}

/// How far behind a trigger is.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    /// The trigger's namespace.
    pub namespace: String,
    /// The trigger's name.
    pub name: String,
    /// Events between the trigger's committed position and the end of the log, matching or
    /// not.
    pub events: u64,
    /// Age of the oldest event the trigger has read and not yet delivered or dead-lettered
    /// (zero when there is none: a trigger that is far behind but has read nothing yet reports
    /// its backlog in `events` only).
    pub oldest_age: Duration,
}

/// Everything a trigger's worker needs, validated and resolved.
#[derive(Debug, Clone)]
pub struct TriggerConfig {
    /// The trigger's namespace.
    pub namespace: String,
    /// The trigger's name.
    pub name: String,
    /// The broker's topic.
    pub topic: String,
    /// The trigger's group on that topic.
    pub group: String,
    /// Which events it receives.
    pub filter: Filter,
    /// Where and how they are delivered.
    pub target: Target,
    /// Where events go when the policy gives up (same format and timeout).
    pub dead_letter_sink: Option<Target>,
    /// Attempts in flight at once.
    pub max_in_flight: usize,
    /// Delivery order.
    pub ordering: Ordering,
    /// Attempts per second, if limited.
    pub rate_limit: Option<f64>,
    /// What follows a failed attempt (for the subscriber and the dead-letter sink alike).
    pub retry: Arc<dyn RetryPolicy>,
}

impl TriggerConfig {
    /// `namespace/name`: for logs, and the trigger's scope in the dead-letter store.
    pub fn key(&self) -> String {
        dead_letter_scope(&self.namespace, &self.name)
    }
}

/// A trigger's scope in the dead-letter store.
pub fn dead_letter_scope(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

struct Worker {
    topic: String,
    progress: Arc<std::sync::Mutex<Progress>>,
    stop: watch::Sender<Stop>,
    redrive: mpsc::UnboundedSender<Redrive>,
    task: JoinHandle<()>,
}

impl Worker {
    async fn stop(self, how: Stop) {
        let _ = self.stop.send(how);
        let _ = self.task.await;
    }
}

/// Runs one worker per trigger.
pub struct Dispatcher {
    log: Arc<dyn EventLog>,
    sender: Sender,
    fanouts: Arc<fanout::Fanouts>,
    workers: Mutex<HashMap<(String, String), Worker>>,
    /// How long a replaced trigger's in-flight deliveries may finish before the new one starts.
    replace_grace: Duration,
}

impl Dispatcher {
    /// A dispatcher over `log`.
    pub fn new(log: Arc<dyn EventLog>, sender: Sender) -> Dispatcher {
        Dispatcher {
            log,
            sender,
            fanouts: Arc::default(),
            workers: Mutex::new(HashMap::new()),
            replace_grace: Duration::from_secs(5),
        }
    }

    /// Starts the trigger's worker, replacing a running one (which first stops gracefully and
    /// commits, so the new one resumes where it left off).
    pub async fn start(&self, config: TriggerConfig) {
        let key = (config.namespace.clone(), config.name.clone());
        let mut workers = self.workers.lock().await;
        if let Some(old) = workers.remove(&key) {
            old.stop(Stop::Graceful(self.replace_grace)).await;
        }
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let (redrive, redrive_rx) = mpsc::unbounded_channel();
        let ctx = delivery::Context {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            rate: config.rate_limit.map(delivery::RateLimiter::new),
            config: Arc::new(config),
            sender: self.sender.clone(),
            dead_letters: self.log.dead_letters(),
            log: self.log.clone(),
            redriving: Default::default(),
        };
        let topic = ctx.config.topic.clone();
        let progress = Arc::new(std::sync::Mutex::new(Progress::default()));
        let task =
            tokio::spawn(worker::run(Arc::new(ctx), progress.clone(), self.fanouts.clone(), stop_rx, redrive_rx));
        workers.insert(key, Worker { topic, progress, stop, redrive, task });
    }

    /// How far behind each running trigger is. Reads each broker's end offsets once.
    pub async fn backlogs(&self) -> Vec<Backlog> {
        struct Snapshot {
            namespace: String,
            name: String,
            topic: String,
            committed: HashMap<u32, u64>,
            oldest_pending_ms: Option<i64>,
        }
        let snapshots: Vec<Snapshot> = {
            let workers = self.workers.lock().await;
            workers
                .iter()
                .map(|((namespace, name), worker)| {
                    let progress = worker.progress.lock().unwrap_or_else(|e| e.into_inner());
                    Snapshot {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        topic: worker.topic.clone(),
                        committed: progress.committed.clone(),
                        oldest_pending_ms: progress.oldest_pending_ms,
                    }
                })
                .collect()
        };
        let mut ends: HashMap<String, Vec<u64>> = HashMap::new();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut backlogs = Vec::with_capacity(snapshots.len());
        for Snapshot { namespace, name, topic, committed, oldest_pending_ms } in snapshots {
            if !ends.contains_key(&topic) {
                // A topic being deleted has no end: its triggers are about to stop.
                let Ok(end) = self.log.end_offsets(&topic).await else { continue };
                ends.insert(topic.clone(), end);
            }
            let events = committed
                .iter()
                .map(|(&partition, &position)| {
                    let end = ends[&topic].get(partition as usize).copied().unwrap_or(position);
                    end.saturating_sub(position)
                })
                .sum();
            let oldest_age = oldest_pending_ms.map_or(Duration::ZERO, |appended| {
                Duration::from_millis(now_ms.saturating_sub(appended).max(0) as u64)
            });
            backlogs.push(Backlog { namespace, name, events, oldest_age });
        }
        backlogs
    }

    /// Redelivers dead letters of a running trigger through its current subscriber and policy.
    /// Returns false when the trigger is not running.
    pub async fn redrive(&self, namespace: &str, name: &str, selection: Redrive) -> bool {
        let workers = self.workers.lock().await;
        match workers.get(&(namespace.to_owned(), name.to_owned())) {
            Some(worker) => worker.redrive.send(selection).is_ok(),
            None => false,
        }
    }

    /// Stops a trigger's worker at once (the trigger is gone, or its broker is).
    pub async fn stop(&self, namespace: &str, name: &str) {
        let worker = self.workers.lock().await.remove(&(namespace.to_owned(), name.to_owned()));
        if let Some(worker) = worker {
            worker.stop(Stop::Abort).await;
        }
    }

    /// Stops every worker, giving in-flight deliveries up to `grace`, then makes progress durable.
    pub async fn shutdown(&self, grace: Duration) {
        let workers: Vec<Worker> = self.workers.lock().await.drain().map(|(_, w)| w).collect();
        // Every worker is told first, so they drain side by side: the whole stop takes at most
        // one grace period, not one per trigger.
        for worker in &workers {
            let _ = worker.stop.send(Stop::Graceful(grace));
        }
        for worker in workers {
            let _ = worker.task.await;
        }
        if let Err(error) = self.log.flush().await {
            tracing::error!(%error, "could not persist trigger progress at shutdown");
        }
    }
}
