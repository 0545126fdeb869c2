//! The dispatcher: for every trigger, read the broker's log through the trigger's own group,
//! filter, and deliver each matching event to the subscriber over HTTP, at least once.
//!
//! Each trigger runs its own worker with its own progress, so a slow or failing subscriber
//! never delays another trigger. A worker commits only its watermark: the lowest offset whose
//! outcome is not final. After a crash, a trigger resumes there, so every event that was not
//! delivered is delivered (duplicates are bounded by the in-flight window).
//!
//! Every task is supervised (`supervise.rs`): a panic is caught, logged, counted, and
//! survived; a trigger whose worker or fanout restarts after one reports it through
//! [`Dispatcher::fault`]. A record the backend could not decode is moved to each trigger's
//! dead-letter store instead of being delivered.
//!
//! The dispatcher knows the log only through [`switchyard_log::EventLog`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_log::{Admit, EventLog};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod ca_certs;
mod delivery;
mod fanout;
pub mod filter;
pub mod http_client;
pub mod identity;
pub mod index;
pub mod metrics;
pub mod outbound;
pub mod plan;
mod queue;
pub mod retry;
pub mod signing;
mod supervise;
#[cfg(test)]
mod testing;
pub mod this_node;
mod tracker;
mod worker;

pub use filter::Filter;
pub use http_client::{DeliveryClient, Target};
pub use plan::{dead_letter_scope, DeliveryPolicy, Format, Ordering, TriggerPlan, TriggerRef};
pub use retry::{Failure, KnativeRetry, Verdict};
pub use supervise::TriggerFault;
pub use worker::Redrive;
use worker::Stop;

/// A trigger's progress as its worker last committed it, for the backlog metrics.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Committed position per partition.
    committed: tracker::Partitions<u64>,
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
    progress: Arc<Mutex<Progress>>,
    stop: watch::Sender<Stop>,
    redrive: queue::Sender<Redrive>,
    /// Set while the worker restarts after a panic.
    fault: supervise::FaultSlot,
    /// The supervisor: waits for the worker it replaced to stop, then runs this one.
    task: JoinHandle<()>,
    /// The `whpk_` public keys it signs with, for the trigger's status.
    public_keys: Vec<String>,
}

impl Worker {
    async fn stop(self, how: Stop) {
        let _ = self.stop.send(how);
        Worker::joined(&self.topic, self.task.await);
    }

    /// Stops a worker being replaced, gracefully within `grace`; its successor's own stop
    /// request (`successor`) is passed on, so that aborting the successor does not wait out
    /// the predecessor's grace.
    async fn replaced(self, grace: Duration, successor: &mut watch::Receiver<Stop>) {
        let _ = self.stop.send(Stop::Graceful(grace));
        let mut task = self.task;
        tokio::select! {
            ended = &mut task => return Worker::joined(&self.topic, ended),
            Ok(()) = successor.changed() => {
                let _ = self.stop.send(*successor.borrow());
            }
        }
        Worker::joined(&self.topic, task.await);
    }

    /// The supervisor catches the worker's panics; one of its own is still never discarded.
    fn joined(topic: &str, ended: Result<(), tokio::task::JoinError>) {
        if let Err(error) = ended {
            if error.is_panic() {
                let message = supervise::panic_message(error.into_panic().as_ref());
                metrics::task_panicked("worker");
                tracing::error!(%topic, panic = %message, "a trigger's supervisor panicked");
            }
        }
    }
}

/// Runs one worker per trigger.
pub struct Dispatcher {
    log: Arc<dyn EventLog>,
    client: DeliveryClient,
    /// Where subscribers' replies enter their broker.
    admission: Arc<dyn Admit>,
    fanouts: Arc<fanout::Fanouts>,
    /// Held only to look up, insert or remove (never across an await), so that replacing a
    /// trigger, which waits for its old worker, holds up no other caller.
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

    fn workers(&self) -> MutexGuard<'_, HashMap<(String, String), Worker>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the trigger's worker, replacing a running one, and returns at once.
    ///
    /// A replaced worker first stops gracefully (its in-flight deliveries get up to 5 s) and
    /// commits; the new one starts reading only then, so it resumes where the old one left off.
    /// That wait happens in the new worker's task, not here: restarting many triggers (a
    /// broker's, when it changes) takes one grace period, not one per trigger, and backlogs,
    /// redrives and other triggers' starts never wait for it. Meanwhile the trigger's backlog
    /// is the old worker's, and a redrive is queued for the new one.
    pub async fn start(&self, trigger: TriggerRef, plan: TriggerPlan) {
        let key = (trigger.namespace.clone(), trigger.name.clone());
        let public_keys = plan.signer.as_ref().map_or_else(Vec::new, |signer| signer.public_keys());
        // Shared before the task is spawned: captured by value, the context would take its
        // room in the task's state for as long as the trigger runs, beside its shared copy.
        let ctx = Arc::new(delivery::Context::new(
            trigger,
            plan,
            self.client.clone(),
            self.log.clone(),
            self.admission.clone(),
        ));
        let topic = ctx.trigger.topic.clone();
        let (stop, mut stop_rx) = watch::channel(Stop::Run);
        let (redrive, redrive_rx) = queue::unbounded();
        let fault = supervise::FaultSlot::default();
        let mut workers = self.workers();
        let previous = workers.remove(&key);
        // Moving to another topic starts afresh; otherwise the old worker's progress stands
        // until the new one commits.
        let progress = match &previous {
            Some(previous) if previous.topic == topic => previous.progress.clone(),
            _ => Arc::default(),
        };
        let (grace, fanouts, watched) = (self.replace_grace, self.fanouts.clone(), (progress.clone(), fault.clone()));
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                previous.replaced(grace, &mut stop_rx).await;
            }
            if *stop_rx.borrow_and_update() != Stop::Run {
                return;
            }
            let (progress, fault) = watched;
            worker::supervise(ctx, progress, fanouts, stop_rx, redrive_rx, fault).await;
        });
        workers.insert(key, Worker { topic, progress, stop, redrive, fault, task, public_keys });
    }

    /// The `whpk_` public keys of the Ed25519 secrets a running trigger signs with; empty when
    /// it signs with none, or does not run on this node.
    pub fn public_keys(&self, namespace: &str, name: &str) -> Vec<String> {
        let workers = self.workers();
        workers.get(&(namespace.to_owned(), name.to_owned())).map_or_else(Vec::new, |worker| worker.public_keys.clone())
    }

    /// Why a running trigger does not work as it should right now: its worker, or its broker's
    /// fanout, panicked and is being restarted (see [`TriggerFault`]). `None` when it works, or
    /// does not run on this node. The fault clears once the restarted task has run for 30 s
    /// without panicking. Cheap and synchronous, for status reports.
    pub fn fault(&self, namespace: &str, name: &str) -> Option<TriggerFault> {
        let workers = self.workers();
        let worker = workers.get(&(namespace.to_owned(), name.to_owned()))?;
        worker.fault.get().or_else(|| self.fanouts.fault(&worker.topic))
    }

    /// How far behind each running trigger is. Reads each broker's end offsets once.
    pub async fn backlogs(&self) -> Vec<Backlog> {
        struct Snapshot {
            namespace: String,
            name: String,
            topic: String,
            committed: tracker::Partitions<u64>,
            oldest_pending_ms: Option<i64>,
        }
        let snapshots: Vec<Snapshot> = {
            let workers = self.workers();
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
        let workers = self.workers();
        match workers.get(&(namespace.to_owned(), name.to_owned())) {
            Some(worker) => worker.redrive.send(selection).is_ok(),
            None => false,
        }
    }

    /// Stops a trigger's worker at once (the trigger is gone, or its broker is).
    pub async fn stop(&self, namespace: &str, name: &str) {
        let worker = self.workers().remove(&(namespace.to_owned(), name.to_owned()));
        if let Some(worker) = worker {
            worker.stop(Stop::Abort).await;
        }
    }

    /// Stops every worker, giving in-flight deliveries up to `grace`, then makes progress durable.
    pub async fn shutdown(&self, grace: Duration) {
        let workers: Vec<Worker> = self.workers().drain().map(|(_, w)| w).collect();
        // Every worker is told first, so they drain side by side: the whole stop takes at most
        // one grace period, not one per trigger.
        for worker in &workers {
            let _ = worker.stop.send(Stop::Graceful(grace));
        }
        for worker in workers {
            Worker::joined(&worker.topic, worker.task.await);
        }
        if let Err(error) = self.log.flush().await {
            tracing::error!(%error, "could not persist trigger progress at shutdown");
        }
    }
}

/// What no record, panic or restart may do: stall a trigger, lose an event, or hold up another
/// caller.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use switchyard_event::Event;
    use switchyard_log::{EventLog, UNDECODABLE_TYPE};
    use tokio::time::Instant;

    use crate::metrics::{TASK_PANICS, UNDECODABLE_RECORDS};
    use crate::supervise::HEALTHY_AFTER;
    use crate::testing::{
        event, of_type, plan, typed, wait_until, Counters, Harness, Received, Reply, Subscriber, NAMESPACE, SCOPE,
        TOPIC, TRIGGER,
    };
    use crate::{TriggerPlan, TriggerRef};

    const SECOND: Duration = Duration::from_secs(1);

    fn events(prefix: &str, n: usize) -> Vec<Event> {
        (0..n).map(|i| event(&format!("{prefix}{i}"))).collect()
    }

    fn counts(received: &[Received]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for request in received {
            *counts.entry(request.id().to_owned()).or_default() += 1;
        }
        counts
    }

    /// Another trigger of the test broker, its group created now (so at the log's end).
    async fn other(h: &Harness, name: &str) -> TriggerRef {
        h.log.create_group(TOPIC, name).await.unwrap();
        TriggerRef { name: name.to_owned(), group: name.to_owned(), ..crate::testing::trigger() }
    }

    fn panics(counters: &Counters, task: &str) -> u64 {
        counters.get(&format!("{TASK_PANICS}{{task={task}}}"))
    }

    #[tokio::test(start_paused = true)]
    async fn an_undecodable_record_is_dead_lettered_by_every_trigger_and_delivery_goes_on_past_it() {
        let (counters, _recorder) = Counters::install();
        let subscriber = Subscriber::accepting().await;
        let h = Harness::new().await;
        // "u" starts behind the fanout and reads the record alone; "t" takes it from the
        // fanout, though its filter matches nothing the stand-in is.
        let behind = other(&h, "u").await;
        h.chaos.undecodable("e1");
        h.start(TriggerPlan { filter: of_type("a"), ..plan(subscriber.url("/t"), |_| {}) }).await;
        h.append(&[typed("e0", "a"), typed("e1", "a"), typed("e2", "b"), typed("e3", "a")]).await;
        h.wait_committed(4).await;
        assert_eq!(subscriber.ids("/t"), ["e0", "e3"], "the record is neither filtered nor delivered");
        h.dispatcher.start(behind, plan(subscriber.url("/u"), |_| {})).await;
        wait_until("u done", || h.log.committed(TOPIC, "u") == Some(4)).await;
        assert_eq!(subscriber.ids("/u"), ["e0", "e2", "e3"]);

        for scope in [SCOPE, "ns/u"] {
            let stored = h.log.dead_letters().list(scope, None, usize::MAX).await.unwrap();
            assert_eq!(stored.len(), 1, "{scope}: {stored:?}");
            let entry = &stored[0];
            assert_eq!((entry.event.ty(), entry.event.id()), (UNDECODABLE_TYPE, "0-1"), "{scope}");
            assert_eq!(entry.reason, "undecodable record at offset 1 of partition 0 of topic 'ns.b': truncated record");
            assert_eq!((entry.attempts, entry.last_error.as_deref()), (0, Some("truncated record")));
        }
        assert_eq!(counters.get(UNDECODABLE_RECORDS), 2, "once per trigger");

        // A redrive leaves it where it is: it is no event to hand a subscriber.
        assert!(h.dispatcher.redrive(NAMESPACE, TRIGGER, crate::Redrive::All).await);
        tokio::time::sleep(SECOND).await;
        assert_eq!(h.dead_letters().await.len(), 1);
        assert_eq!(subscriber.ids("/t"), ["e0", "e3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_that_panics_is_retried_then_dead_lettered_and_the_watermark_moves_on() {
        let (counters, _recorder) = Counters::install();
        // e1's answer carries a reply, whose admission panics (twice).
        let subscriber =
            Subscriber::start(|r| if r.id() == "e1" { Reply::event(&event("reply")) } else { Reply::ok() }).await;
        let h = Harness::new().await;
        h.admissions.panic_next(2);
        h.start(plan(subscriber.url("/"), |d| d.retry.retries = 1)).await;
        h.append(&events("e", 3)).await;
        h.wait_committed(3).await;
        assert_eq!(counts(&subscriber.at("/"))["e1"], 2, "the panic counted as a failed attempt, and was retried");
        assert_eq!(panics(counters, "delivery"), 2);
        let stored = h.dead_letters().await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].event.id(), "e1");
        assert_eq!(stored[0].reason, "panic: injected panic in admission after 2 attempts");
        assert_eq!(stored[0].attempts, 2);
        // The worker is unharmed.
        h.append(&events("f", 2)).await;
        h.wait_committed(5).await;
        assert_eq!(
            h.dispatcher.fault(NAMESPACE, TRIGGER),
            None,
            "a delivery's panic is the event's, not the trigger's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_delivery_retried_within_the_policy_is_delivered() {
        let (counters, _recorder) = Counters::install();
        let subscriber =
            Subscriber::start(|r| if r.id() == "e0" { Reply::event(&event("reply")) } else { Reply::ok() }).await;
        let h = Harness::new().await;
        h.admissions.panic_next(1);
        h.start(plan(subscriber.url("/"), |d| d.retry.retries = 3)).await;
        h.append(&events("e", 2)).await;
        h.wait_committed(2).await;
        assert!(h.dead_letters().await.is_empty());
        assert_eq!(panics(counters, "delivery"), 1);
        let replies: Vec<_> = h.admissions.calls().into_iter().filter(|call| !call.refused).collect();
        assert_eq!(replies.len(), 1, "the second try's reply was admitted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_panics_restarts_from_its_committed_position_and_reports_a_fault_until_healthy() {
        let (counters, _recorder) = Counters::install();
        let subscriber = Subscriber::start(|_| Reply::ok().after(SECOND)).await;
        let h = Harness::new().await;
        // Workers read alone (as on Kafka), so that the worker's own read is what panics.
        h.chaos.partitioned();
        h.start(plan(subscriber.url("/"), |_| {})).await;
        h.append(&events("e", 3)).await;
        h.wait_committed(3).await;
        assert_eq!(h.dispatcher.fault(NAMESPACE, TRIGGER), None);
        // The read after the one that brings e3..e5 panics, with their deliveries in flight.
        h.chaos.panic_subscription_reads(2);
        h.append(&events("e", 6)[3..]).await;
        wait_until("a fault", || h.dispatcher.fault(NAMESPACE, TRIGGER).is_some()).await;
        let fault = h.dispatcher.fault(NAMESPACE, TRIGGER).unwrap();
        assert_eq!(fault.reason, "WorkerPanicked");
        assert!(fault.message.contains("injected panic in a read of a subscription"), "{}", fault.message);
        h.wait_committed(6).await;
        assert_eq!(panics(counters, "worker"), 2, "it panicked again on its first read after the restart");
        let delivered = counts(&subscriber.at("/"));
        assert_eq!(delivered.len(), 6, "nothing skipped: {delivered:?}");
        assert!(delivered.iter().all(|(id, &n)| n == 1 || id.as_str() >= "e3"), "{delivered:?}");
        assert!(h.dispatcher.fault(NAMESPACE, TRIGGER).is_some(), "not yet healthy long enough");
        tokio::time::sleep(HEALTHY_AFTER).await;
        assert_eq!(h.dispatcher.fault(NAMESPACE, TRIGGER), None);
        h.append(&events("f", 2)).await;
        h.wait_committed(8).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_fanout_that_panics_restarts_its_triggers_lose_nothing_and_report_it_meanwhile() {
        let (counters, _recorder) = Counters::install();
        let subscriber = Subscriber::accepting().await;
        let h = Harness::new().await;
        h.chaos.panic_reader_reads(1);
        h.start(plan(subscriber.url("/"), |_| {})).await;
        wait_until("a fault", || h.dispatcher.fault(NAMESPACE, TRIGGER).is_some()).await;
        assert_eq!(h.dispatcher.fault(NAMESPACE, TRIGGER).unwrap().reason, "FanoutPanicked");
        h.append(&events("e", 5)).await;
        h.wait_committed(5).await;
        assert_eq!(panics(counters, "fanout"), 1);
        tokio::time::sleep(HEALTHY_AFTER + 2 * SECOND).await;
        assert_eq!(h.dispatcher.fault(NAMESPACE, TRIGGER), None);
        h.append(&events("f", 5)).await;
        h.wait_committed(10).await;
        let delivered = counts(&subscriber.at("/"));
        assert_eq!(delivered.len(), 10);
        assert!(delivered.values().all(|&n| n == 1), "{delivered:?}");
        // Caught up, the trigger is back on the restarted fanout, which brings the next ones.
        let fanout = h.dispatcher.fanouts.running(TOPIC).expect("the fanout");
        assert_eq!(fanout.attached().await, [SCOPE]);
        h.append(&events("g", 5)).await;
        h.wait_committed(15).await;
    }

    #[tokio::test(start_paused = true)]
    async fn replacing_triggers_holds_up_no_caller_and_their_grace_periods_overlap() {
        // The first try of each event is held for a minute, the next ones answered at once.
        let subscriber =
            Subscriber::start(|r| if r.attempt == 1 { Reply::ok().after(60 * SECOND) } else { Reply::ok() }).await;
        let h = Harness::new().await;
        let u = other(&h, "u").await;
        h.start(plan(subscriber.url("/t"), |_| {})).await;
        h.dispatcher.start(u.clone(), plan(subscriber.url("/u"), |_| {})).await;
        h.append(&events("e", 1)).await;
        subscriber.wait_for("/t", 1).await;
        subscriber.wait_for("/u", 1).await;

        let replacing = Instant::now();
        h.start(plan(subscriber.url("/t"), |_| {})).await;
        h.dispatcher.start(u, plan(subscriber.url("/u"), |_| {})).await;
        assert_eq!(replacing.elapsed(), Duration::ZERO, "start does not wait for the old workers");
        let backlogs = h.dispatcher.backlogs().await;
        assert_eq!(replacing.elapsed(), Duration::ZERO, "nor do backlogs");
        assert_eq!(backlogs.iter().map(|b| b.events).collect::<Vec<_>>(), [1, 1], "the old workers' progress");
        assert!(h.dispatcher.redrive(NAMESPACE, TRIGGER, crate::Redrive::All).await, "queued for the new worker");

        // Both old workers stop at the end of one grace period, and the new ones redeliver.
        h.wait_committed(1).await;
        wait_until("u done", || h.log.committed(TOPIC, "u") == Some(1)).await;
        for path in ["/t", "/u"] {
            let retried = subscriber.at(path)[1].arrived - replacing;
            assert!((5 * SECOND..6 * SECOND).contains(&retried), "{path} retried after {retried:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_a_trigger_being_replaced_does_not_wait_out_the_old_workers_grace() {
        let subscriber = Subscriber::start(|_| Reply::ok().after(60 * SECOND)).await;
        let h = Harness::new().await;
        h.start(plan(subscriber.url("/"), |_| {})).await;
        h.append(&events("e", 1)).await;
        subscriber.wait_for("/", 1).await;
        h.start(plan(subscriber.url("/"), |_| {})).await;
        let stopping = Instant::now();
        h.dispatcher.stop(NAMESPACE, TRIGGER).await;
        assert!(stopping.elapsed() < SECOND, "{:?}", stopping.elapsed());
        assert_eq!(h.committed(), 0);
        assert!(h.dispatcher.backlogs().await.is_empty());
    }
}
