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

use switchyard_log::{Admit, EventLog};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

mod delivery;
mod fanout;
pub mod filter;
pub mod http_client;
pub mod index;
pub mod metrics;
pub mod plan;
pub mod retry;
#[cfg(test)]
mod testing;
mod tracker;
mod worker;

pub use filter::Filter;
pub use http_client::{DeliveryClient, Target};
pub use plan::{dead_letter_scope, DeliveryPolicy, Format, Ordering, TriggerPlan, TriggerRef};
pub use retry::{Failure, KnativeRetry, Verdict};
pub use worker::Redrive;
use worker::Stop;

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
    client: DeliveryClient,
    /// Where subscribers' replies enter their broker.
    admission: Arc<dyn Admit>,
    fanouts: Arc<fanout::Fanouts>,
    workers: Mutex<HashMap<(String, String), Worker>>,
    /// How long a replaced trigger's in-flight deliveries may finish before the new one starts.
    replace_grace: Duration,
}

impl Dispatcher {
    /// A dispatcher reading `log`, delivering with `client`, and putting replies into their
    /// broker through `admission`.
    pub fn new(log: Arc<dyn EventLog>, client: DeliveryClient, admission: Arc<dyn Admit>) -> Dispatcher {
        Dispatcher {
            log,
            client,
            admission,
            fanouts: Arc::default(),
            workers: Mutex::new(HashMap::new()),
            replace_grace: Duration::from_secs(5),
        }
    }

    /// Starts the trigger's worker, replacing a running one (which first stops gracefully and
    /// commits, so the new one resumes where it left off).
    pub async fn start(&self, trigger: TriggerRef, plan: TriggerPlan) {
        let key = (trigger.namespace.clone(), trigger.name.clone());
        let mut workers = self.workers.lock().await;
        if let Some(old) = workers.remove(&key) {
            old.stop(Stop::Graceful(self.replace_grace)).await;
        }
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let (redrive, redrive_rx) = mpsc::unbounded_channel();
        let ctx = delivery::Context::new(trigger, plan, self.client.clone(), self.log.clone(), self.admission.clone());
        let topic = ctx.trigger.topic.clone();
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
