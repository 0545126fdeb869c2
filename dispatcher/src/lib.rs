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
use std::time::Duration;

use switchyard_log::EventLog;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

pub mod filter;
pub mod policy;
pub mod sender;
mod tracker;
mod worker;

pub use filter::Filter;
pub use policy::{Failure, RetryPolicy, UntilDelivered, Verdict};
pub use sender::{Format, Sender, Target};
use worker::Stop;

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
    /// Deliveries in flight at once.
    pub max_in_flight: usize,
    /// What follows a failed attempt.
    pub retry: Arc<dyn RetryPolicy>,
}

impl TriggerConfig {
    /// `namespace/name`, for logs.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

struct Worker {
    stop: watch::Sender<Stop>,
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
    workers: Mutex<HashMap<(String, String), Worker>>,
    /// How long a replaced trigger's in-flight deliveries may finish before the new one starts.
    replace_grace: Duration,
}

impl Dispatcher {
    /// A dispatcher over `log`.
    pub fn new(log: Arc<dyn EventLog>, sender: Sender) -> Dispatcher {
        Dispatcher { log, sender, workers: Mutex::new(HashMap::new()), replace_grace: Duration::from_secs(5) }
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
        let task = tokio::spawn(worker::run(Arc::new(config), self.log.clone(), self.sender.clone(), stop_rx));
        workers.insert(key, Worker { stop, task });
    }

    /// Stops a trigger's worker at once (the trigger is gone, or its broker is).
    pub async fn stop(&self, namespace: &str, name: &str) {
        let worker = self.workers.lock().await.remove(&(namespace.to_owned(), name.to_owned()));
        if let Some(worker) = worker {
            worker.stop(Stop::Abort).await;
        }
    }

    /// Whether a worker runs for the trigger.
    pub async fn is_running(&self, namespace: &str, name: &str) -> bool {
        self.workers.lock().await.contains_key(&(namespace.to_owned(), name.to_owned()))
    }

    /// Stops every worker, giving in-flight deliveries up to `grace`, then makes progress durable.
    pub async fn shutdown(&self, grace: Duration) {
        let workers: Vec<Worker> = self.workers.lock().await.drain().map(|(_, w)| w).collect();
        let stops = workers.into_iter().map(|w| w.stop(Stop::Graceful(grace)));
        for stop in stops {
            stop.await;
        }
        if let Err(error) = self.log.flush().await {
            tracing::error!(%error, "could not persist trigger progress at shutdown");
        }
    }
}
