//! The sources of this node: every declared source compiled, the activities of the ones this
//! node holds running, and webhook requests answered.
//!
//! - **Placement.** Each source hashes to one of [`Placement::slots`] slots, and a node runs the
//!   activities of the sources whose slot it holds. With the embedded log one node holds them
//!   all; on Kafka the slots are partitions of a lease topic shared out by Kafka's group
//!   protocol, so each source runs on exactly one live node, and moves when that node goes.
//!   Before a slot is given up, [`Sources::release`] stops what runs on it.
//! - **Webhooks** are answered on any node: a request names its source (looked up before the
//!   body is read: [`Sources::webhook_target`]), and the events go to the sink from the node
//!   that received them. A delivery whose event id this source already took is answered as
//!   accepted and not sent again (the ids are kept for [`SEEN_RETENTION`]). An id is reserved
//!   before its event is sent: a concurrent delivery of the same id on this node waits for the
//!   first one's outcome and is answered from it (accepted as a duplicate, or the same
//!   failure); a failed send releases the reservation, so that a later redelivery is sent.
//! - **Supervision**: every task the runtime spawns is watched. An activity that panics is
//!   logged at `error`, counted (`switchyard_task_panics_total{task="source"}`), its source
//!   shows `Ready=False` ([`TASK_PANICKED`]), and it starts again after the waits of
//!   [`switchyard_log::supervise`]; once it has run for [`HEALTHY_AFTER`] without panicking,
//!   its status clears and the wait starts over.
//! - **Progress** a source must not repeat lives in the backend's [`StateStore`], under keys
//!   that start with the source's identity (`pingsource/ns/name/…`); deleting a source removes
//!   them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchyard_event::limits::LimitExceeded;
use switchyard_event::Event;
use switchyard_log::backoff::ExponentialBackoff;
pub(crate) use switchyard_log::supervise::HEALTHY_AFTER;
use switchyard_log::supervise::{join_panic, restart_backoff};
use switchyard_log::{slot_of, LogError, Placement, Release, StateStore};
use switchyard_meta::status::{Condition, SourceStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::resource::{Declared, Sink, Source, SourceRef};
use crate::sink::{cached_object_address, sink_uri, Emitter, Outlets, SinkError};
use crate::{Activity, Behaviour, Clients, NotReady, Receipt, SourceKind, Webhook, WebhookError};

#[cfg(test)]
mod tests;

/// How long a webhook source remembers the event ids it took: GitHub lets a delivery be
/// redelivered for three days.
pub(crate) const SEEN_RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);
/// How often the ids older than that are forgotten.
const SEEN_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// How long a webhook request waits for its sink before answering 503: GitHub gives up on a
/// delivery after 10 s.
const WEBHOOK_SINK_DEADLINE: Duration = Duration::from_secs(5);
/// How much longer than that a concurrent delivery of the same id waits for the first one's
/// outcome (the first also records the id once sent).
const WEBHOOK_WAIT_MARGIN: Duration = Duration::from_secs(1);
/// The first and the longest wait between attempts at a sink that refused.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The status reason of a source whose task panicked and waits to start again.
pub(crate) const TASK_PANICKED: &str = "SourceTaskPanicked";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The slot of a source: a hash of its identity, stable across versions and nodes.
pub(crate) fn source_slot(id: &SourceRef, slots: u32) -> u32 {
    slot_of(&id.to_string(), slots)
}

struct Entry {
    declared: Arc<Declared>,
    behaviour: Result<Behaviour, NotReady>,
    /// What the running activity last reported, if anything is wrong.
    problem: Arc<Mutex<Option<NotReady>>>,
    running: Option<Running>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "a source's task failed");
        }
    }
}

/// The sources of this node.
pub struct Sources {
    outlets: Outlets,
    clients: Clients,
    state: Arc<dyn StateStore>,
    placement: Arc<dyn Placement>,
    entries: Mutex<HashMap<SourceRef, Entry>>,
    /// Serialises every change to what runs (declarations, placement, shutdown).
    changes: tokio::sync::Mutex<bool>,
    /// The webhook event ids being sent now, by their seen key, with how each send ended.
    in_flight: Arc<Mutex<HashMap<String, watch::Receiver<Option<SendOutcome>>>>>,
}

/// How the send of a reserved webhook event ended.
#[derive(Debug, Clone)]
enum SendOutcome {
    /// Durable in the sink.
    Taken,
    /// Not taken: a concurrent delivery of the same id is answered the same.
    Failed(WebhookFailure),
}

/// An event id this node is sending now; released (and its waiters told) when dropped, also
/// when the request is abandoned midway.
struct Reservation {
    key: String,
    outcome: watch::Sender<Option<SendOutcome>>,
    in_flight: Arc<Mutex<HashMap<String, watch::Receiver<Option<SendOutcome>>>>>,
}

impl Reservation {
    fn finish(&self, outcome: SendOutcome) {
        self.outcome.send_replace(Some(outcome));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.key);
    }
}

/// A webhook source a request names, found before the request's body is read.
pub struct WebhookTarget {
    kind: &'static dyn SourceKind,
    declared: Arc<Declared>,
    webhook: Arc<dyn Webhook>,
}

/// A webhook request that was answered with success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAnswer {
    /// Every event is durable in the sink (`duplicates` of them had been already).
    Accepted {
        /// The event ids.
        ids: Vec<String>,
        /// How many were taken before and not sent again.
        duplicates: usize,
    },
    /// Nothing to send, with why.
    Ignored(String),
}

/// A webhook request that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookFailure {
    /// No such source (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong (401, 400, 415).
    #[error(transparent)]
    Refused(#[from] WebhookError),
    /// The source cannot take events (its secret is missing): 503.
    #[error("{0}")]
    NotReady(String),
    /// The sink did not take the events in time: 503, retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The broker refuses the events for good (an event over a limit): 413.
    #[error(transparent)]
    Limit(LimitExceeded),
}

impl Sources {
    /// The sources runtime: events go through `outlets`, kinds get `clients`, progress goes
    /// into `state`, and activities run for the slots `placement` gives this node (and stop
    /// before it gives them up).
    pub fn start(
        outlets: Outlets,
        clients: Clients,
        state: Arc<dyn StateStore>,
        placement: Arc<dyn Placement>,
    ) -> Arc<Sources> {
        let sources = Arc::new(Sources {
            outlets,
            clients,
            state,
            placement,
            entries: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(false),
            in_flight: Arc::default(),
        });
        sources.placement.on_release(Arc::new(ReleaseSources(Arc::downgrade(&sources))));
        let weak = Arc::downgrade(&sources);
        spawn_supervised("following the placement", move || follow_placement(weak.clone()));
        let weak = Arc::downgrade(&sources);
        spawn_supervised("forgetting old webhook ids", move || forget_old_ids(weak.clone()));
        sources
    }

    /// Applies a declared (created or replaced) source: compiles it, and (re)starts its
    /// activity if this node holds it.
    pub async fn apply(&self, kind: &'static dyn SourceKind, source: &Source) {
        let stopped = self.changes.lock().await;
        if *stopped {
            return;
        }
        let declared = match Declared::new(kind, source) {
            Ok(declared) => declared,
            Err(error) => {
                tracing::error!(kind = kind.kind(), %error, "stored source is invalid: fix it with a PUT");
                return;
            }
        };
        let behaviour = kind.compile(&declared, &self.clients);
        if let Err(not_ready) = &behaviour {
            tracing::warn!(source = %declared.id, reason = not_ready.reason, message = %not_ready.message, "source not ready");
        }
        let id = declared.id.clone();
        let previous = lock(&self.entries).remove(&id).and_then(|entry| entry.running);
        if let Some(previous) = previous {
            previous.stop().await;
        }
        let entry = Entry { declared: Arc::new(declared), behaviour, problem: Arc::default(), running: None };
        lock(&self.entries).insert(id.clone(), entry);
        let held = self.placement.held().borrow().clone();
        self.start_if_held(&id, &held);
    }

    /// Removes a deleted source: stops it and forgets its progress.
    pub async fn remove(&self, id: &SourceRef) {
        let _changes = self.changes.lock().await;
        let running = lock(&self.entries).remove(id).and_then(|entry| entry.running);
        if let Some(running) = running {
            running.stop().await;
        }
        let prefix = format!("{id}/");
        match self.state.scan(&prefix).await {
            Ok(entries) => {
                for (key, _) in entries {
                    if let Err(error) = self.state.remove(&key).await {
                        tracing::warn!(source = %id, key, %error, "cannot forget a deleted source's progress");
                    }
                }
            }
            Err(error) => tracing::warn!(source = %id, %error, "cannot forget a deleted source's progress"),
        }
    }

    /// Stops what runs on `slots`, before this node gives them up; returns once it has stopped.
    pub async fn release(&self, slots: &BTreeSet<u32>) {
        let _changes = self.changes.lock().await;
        let total = self.placement.slots();
        let stopping: Vec<Running> = lock(&self.entries)
            .iter_mut()
            .filter(|(id, _)| slots.contains(&source_slot(id, total)))
            .filter_map(|(_, entry)| entry.running.take())
            .collect();
        for running in stopping {
            running.stop().await;
        }
    }

    /// Starts and stops activities to match the slots held now.
    async fn follow(&self, held: &BTreeSet<u32>) {
        let stopped = self.changes.lock().await;
        if *stopped {
            return;
        }
        let total = self.placement.slots();
        let (to_stop, to_start) = {
            let mut entries = lock(&self.entries);
            let mut to_stop = Vec::new();
            let mut to_start = Vec::new();
            for (id, entry) in entries.iter_mut() {
                let holds = held.contains(&source_slot(id, total));
                match (&entry.running, holds) {
                    (Some(_), false) => to_stop.extend(entry.running.take()),
                    (None, true) => to_start.push(id.clone()),
                    _ => {}
                }
            }
            (to_stop, to_start)
        };
        for running in to_stop {
            running.stop().await;
        }
        for id in to_start {
            self.start_if_held(&id, held);
        }
    }

    fn start_if_held(&self, id: &SourceRef, held: &BTreeSet<u32>) {
        if !held.contains(&source_slot(id, self.placement.slots())) {
            return;
        }
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(id) else { return };
        let Ok(Behaviour::Active(activity)) = &entry.behaviour else { return };
        if entry.running.is_some() {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let context = RunContext {
            declared: Arc::clone(&entry.declared),
            emitter: self.emitter(&entry.declared),
            state: Arc::clone(&self.state),
            stop: stopped,
            problem: Arc::clone(&entry.problem),
        };
        let activity: Arc<dyn Activity> = Arc::clone(activity);
        tracing::info!(source = %id, "source started");
        let task = tokio::spawn(supervise(activity, context));
        entry.running = Some(Running { stop, task });
    }

    fn emitter(&self, declared: &Declared) -> Emitter {
        Emitter::new(declared.id.clone(), declared.sink.clone(), declared.overrides.clone(), self.outlets.clone())
            .with_http_options(declared.http.clone())
            .with_addresses(self.clients.addresses.clone())
    }

    /// Stops every activity and gives the slots up (for shutdown); nothing starts afterwards.
    pub async fn shutdown(&self) {
        {
            let mut stopped = self.changes.lock().await;
            *stopped = true;
            let running: Vec<Running> =
                lock(&self.entries).values_mut().filter_map(|entry| entry.running.take()).collect();
            for running in running {
                running.stop().await;
            }
        }
        // Not under `changes`: leaving releases the slots through `release`, which takes it.
        self.placement.leave().await;
    }

    /// The observed state of a stored source; `base_url` is where this server is reached.
    pub fn status(&self, kind: &'static dyn SourceKind, source: &Source, base_url: &str) -> SourceStatus {
        let mut status = SourceStatus {
            observed_generation: source.metadata.generation,
            conditions: Vec::new(),
            sink_uri: None,
            webhook_url: None,
        };
        let declared = match Declared::new(kind, source) {
            Ok(declared) => declared,
            Err(error) => {
                status.conditions.push(Condition::not_ready("InvalidSpec", error.to_string()));
                return status;
            }
        };
        let namespace = &declared.id.namespace;
        let addresses = self.clients.addresses.as_deref();
        status.sink_uri = sink_uri(base_url, namespace, &declared.sink, addresses);
        if let Some(path) = kind.webhook_path() {
            status.webhook_url = Some(format!("{base_url}/webhooks/{path}/{namespace}/{}", declared.id.name));
        }
        // The first thing wrong, in the order a user fixes them: the declaration, the sink,
        // then what the running source last reported.
        let entries = lock(&self.entries);
        let entry = entries.get(&declared.id);
        let compiled = entry.and_then(|entry| entry.behaviour.as_ref().err().cloned());
        let missing_sink = match &declared.sink {
            Sink::Broker(broker) if !self.outlets.admission.broker_exists(namespace, broker) => Some(NotReady {
                reason: "SinkNotFound",
                message: format!("broker '{namespace}/{broker}' does not exist"),
            }),
            // Knative's sources say `SinkProvided=False` while their sink cannot be resolved.
            Sink::Object { reference, path } => match cached_object_address(addresses, reference, path.as_deref()) {
                Some(Err(message)) => Some(NotReady { reason: "SinkNotFound", message }),
                _ => None,
            },
            _ => None,
        };
        let reported = || entry.and_then(|entry| lock(&entry.problem).clone());
        let ready = || {
            kind.ready_note(&declared)
                .map_or_else(Condition::ready, |(reason, message)| Condition::ready_because(reason, message))
        };
        let condition = compiled
            .or(missing_sink)
            .or_else(reported)
            .map_or_else(ready, |problem| Condition::not_ready(problem.reason, problem.message));
        status.conditions.push(condition);
        status
    }

    /// The webhook source a request to `/webhooks/{path}/{namespace}/{name}` names: looked up
    /// before the request's body is read, so that a request for no source costs nothing.
    pub fn webhook_target(&self, path: &str, namespace: &str, name: &str) -> Result<WebhookTarget, WebhookFailure> {
        let kind = crate::kinds()
            .iter()
            .copied()
            .find(|kind| kind.webhook_path() == Some(path))
            .ok_or_else(|| WebhookFailure::NotFound(format!("no webhook source kind '{path}'")))?;
        let id = SourceRef { kind: kind.kind(), namespace: namespace.to_owned(), name: name.to_owned() };
        let entries = lock(&self.entries);
        let entry = entries
            .get(&id)
            .ok_or_else(|| WebhookFailure::NotFound(format!("{} '{namespace}/{name}' does not exist", kind.kind())))?;
        let webhook: Arc<dyn Webhook> = match &entry.behaviour {
            Ok(Behaviour::Webhook(webhook)) => Arc::clone(webhook),
            Ok(Behaviour::Active(_)) => {
                return Err(WebhookFailure::NotFound(format!("{} '{namespace}/{name}' takes no webhooks", kind.kind())))
            }
            Err(not_ready) => {
                return Err(WebhookFailure::NotReady(format!(
                    "{} '{namespace}/{name}' is not ready: {}",
                    kind.kind(),
                    not_ready.message
                )))
            }
        };
        Ok(WebhookTarget { kind, declared: Arc::clone(&entry.declared), webhook })
    }

    /// Answers a request to `/webhooks/{path}/{namespace}/{name}`.
    pub async fn webhook(
        &self,
        path: &str,
        namespace: &str,
        name: &str,
        headers: &http::HeaderMap,
        body: &Bytes,
    ) -> Result<WebhookAnswer, WebhookFailure> {
        let target = self.webhook_target(path, namespace, name)?;
        self.receive(&target, headers, body).await
    }

    /// Answers a webhook request to `target` (from [`Sources::webhook_target`]).
    pub async fn receive(
        &self,
        target: &WebhookTarget,
        headers: &http::HeaderMap,
        body: &Bytes,
    ) -> Result<WebhookAnswer, WebhookFailure> {
        let kind = target.kind;
        let declared = &target.declared;
        let events = match target.webhook.receive(headers, body) {
            Ok(Receipt::Events(events)) => events,
            Ok(Receipt::Ignored(reason)) => {
                crate::metrics::events(kind.kind(), "ignored", 1);
                return Ok(WebhookAnswer::Ignored(reason));
            }
            Err(error) => {
                crate::metrics::events(kind.kind(), "refused", 1);
                return Err(error.into());
            }
        };
        let ids: Vec<String> = events.iter().map(|event| event.id().to_owned()).collect();
        // One event per id: a request that names an id twice carries it once.
        let mut unique = std::collections::HashSet::new();
        let events: Vec<Event> = events.into_iter().filter(|event| unique.insert(event.id().to_owned())).collect();
        let reserved = match self.reserve(&declared.id, events).await? {
            Reserved::Taken => {
                crate::metrics::events(kind.kind(), "duplicate", ids.len());
                return Ok(WebhookAnswer::Accepted { duplicates: ids.len(), ids });
            }
            Reserved::Mine(reserved) => reserved,
        };
        let mut fresh = Vec::with_capacity(reserved.len());
        let mut reservations = Vec::with_capacity(reserved.len());
        for (event, reservation) in reserved {
            let seen = self.state.get(&reservation.key).await.map_err(unavailable)?;
            if seen.is_none() {
                fresh.push(event);
            }
            reservations.push(reservation);
        }
        let duplicates = ids.len() - fresh.len();
        crate::metrics::events(kind.kind(), "duplicate", duplicates);
        if !fresh.is_empty() {
            let fresh_ids: Vec<String> = fresh.iter().map(|event| event.id().to_owned()).collect();
            let count = fresh.len();
            if let Err(failure) = self.emit_within(declared, fresh, WEBHOOK_SINK_DEADLINE).await {
                for reservation in &reservations {
                    reservation.finish(SendOutcome::Failed(failure.clone()));
                }
                return Err(failure);
            }
            crate::metrics::events(kind.kind(), "sent", count);
            let now = now_ms().to_string();
            for event_id in fresh_ids {
                // The events are durable: a failure to remember them only risks a duplicate
                // if the sender delivers them again.
                if let Err(error) = self.state.put(&seen_key(&declared.id, &event_id), now.as_bytes()).await {
                    tracing::warn!(source = %declared.id, event_id, %error, "cannot record a delivery id; a redelivery would be sent again");
                }
            }
        }
        for reservation in &reservations {
            reservation.finish(SendOutcome::Taken);
        }
        Ok(WebhookAnswer::Accepted { ids, duplicates })
    }

    /// Reserves the ids of `events` (all of them, or none while a concurrent delivery sends one
    /// of them: then waits for its outcome and tries again), so that no two requests on this
    /// node send an id at once. `Taken` when a concurrent delivery has sent them all.
    async fn reserve(&self, source: &SourceRef, events: Vec<Event>) -> Result<Reserved, WebhookFailure> {
        let give_up = tokio::time::Instant::now() + WEBHOOK_SINK_DEADLINE + WEBHOOK_WAIT_MARGIN;
        let mut taken_by_others = std::collections::HashSet::new();
        loop {
            let busy = {
                let mut in_flight = lock(&self.in_flight);
                let busy = events.iter().filter(|event| !taken_by_others.contains(event.id())).find_map(|event| {
                    in_flight.get(&seen_key(source, event.id())).map(|r| (event.id().to_owned(), r.clone()))
                });
                match busy {
                    Some(busy) => busy,
                    None => {
                        let mut reserved = Vec::with_capacity(events.len());
                        for event in events {
                            if taken_by_others.contains(event.id()) {
                                continue;
                            }
                            let key = seen_key(source, event.id());
                            let (outcome, watcher) = watch::channel(None);
                            in_flight.insert(key.clone(), watcher);
                            let in_flight = Arc::clone(&self.in_flight);
                            reserved.push((event, Reservation { key, outcome, in_flight }));
                        }
                        return Ok(if reserved.is_empty() { Reserved::Taken } else { Reserved::Mine(reserved) });
                    }
                }
            };
            let (event_id, mut outcome) = busy;
            let waited = tokio::time::timeout_at(give_up, outcome.wait_for(Option::is_some)).await;
            match waited {
                Ok(Ok(ended)) => match ended.clone() {
                    Some(SendOutcome::Taken) => {
                        taken_by_others.insert(event_id);
                    }
                    Some(SendOutcome::Failed(failure)) => return Err(failure),
                    None => {}
                },
                // Abandoned (its request went away) before an outcome: try again.
                Ok(Err(_)) => {}
                Err(_) => {
                    return Err(WebhookFailure::Unavailable(format!(
                        "a concurrent delivery of event '{event_id}' is still being sent; retry later"
                    )))
                }
            }
        }
    }

    /// Sends to the sink, retrying for up to `deadline`; a refusal for good is not retried.
    async fn emit_within(
        &self,
        declared: &Declared,
        events: Vec<Event>,
        deadline: Duration,
    ) -> Result<(), WebhookFailure> {
        let emitter = self.emitter(declared);
        let give_up = tokio::time::Instant::now() + deadline;
        let mut wait = ExponentialBackoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            match emitter.emit(events.clone()).await {
                Ok(()) => return Ok(()),
                Err(SinkError::Refused(limit)) => {
                    crate::metrics::events(declared.id.kind, "refused", events.len());
                    return Err(WebhookFailure::Limit(limit));
                }
                Err(error) => {
                    if tokio::time::Instant::now() + wait.peek() >= give_up {
                        tracing::warn!(source = %declared.id, %error, "webhook events not taken by the sink");
                        crate::metrics::events(declared.id.kind, "failed", events.len());
                        return Err(WebhookFailure::Unavailable(format!("the sink did not take the events: {error}")));
                    }
                    tokio::time::sleep(wait.next_delay()).await;
                }
            }
        }
    }

    /// Forgets webhook event ids older than [`SEEN_RETENTION`].
    async fn forget_old_ids(&self) {
        let cutoff = now_ms().saturating_sub(SEEN_RETENTION.as_millis() as u64);
        let webhook_kinds: Vec<&str> =
            crate::kinds().iter().filter(|kind| kind.webhook_path().is_some()).map(|kind| kind.kind()).collect();
        for kind in webhook_kinds {
            let Ok(entries) = self.state.scan(&format!("{}/", kind.to_ascii_lowercase())).await else { continue };
            for (key, value) in entries {
                let taken = std::str::from_utf8(&value).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                if key.contains("/seen/") && taken < cutoff {
                    let _ = self.state.remove(&key).await;
                }
            }
        }
    }
}

/// What [`Sources::reserve`] got.
enum Reserved {
    /// A concurrent delivery sent them all.
    Taken,
    /// The events to send, each with its reservation.
    Mine(Vec<(Event, Reservation)>),
}

fn seen_key(id: &SourceRef, event_id: &str) -> String {
    format!("{id}/seen/{event_id}")
}

fn unavailable(error: LogError) -> WebhookFailure {
    WebhookFailure::Unavailable(format!("cannot check earlier deliveries: {error}"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Stops the sources of slots this node gives up ([`Release`] for the placement).
struct ReleaseSources(std::sync::Weak<Sources>);

#[async_trait::async_trait]
impl Release for ReleaseSources {
    async fn release(&self, slots: &BTreeSet<u32>) {
        if let Some(sources) = self.0.upgrade() {
            sources.release(slots).await;
        }
    }
}

/// Follows the slots this node holds. Started again after a panic, it first catches up with
/// the slots held now.
async fn follow_placement(sources: std::sync::Weak<Sources>) {
    let Some(mut held) = sources.upgrade().map(|sources| sources.placement.held()) else { return };
    loop {
        let Some(sources) = sources.upgrade() else { return };
        let now = held.borrow_and_update().clone();
        sources.follow(&now).await;
        drop(sources);
        if held.changed().await.is_err() {
            return;
        }
    }
}

async fn forget_old_ids(sources: std::sync::Weak<Sources>) {
    let mut interval = tokio::time::interval(SEEN_SWEEP_INTERVAL);
    loop {
        interval.tick().await;
        let Some(sources) = sources.upgrade() else { return };
        sources.forget_old_ids().await;
    }
}

/// Runs `activity` until it returns (asked to stop), starting it again after a panic: the panic
/// is logged, counted and shown in the source's status, and each restart waits twice as long
/// as the one before until a run lasts [`HEALTHY_AFTER`].
async fn supervise(activity: Arc<dyn Activity>, context: RunContext) {
    let id = context.declared.id.clone();
    let mut restarts = restart_backoff();
    let mut recovering = false;
    loop {
        let run = {
            let activity = Arc::clone(&activity);
            let context = context.again();
            tokio::spawn(async move { activity.run(context).await })
        };
        let joined = watch_run(run, recovering.then_some(HEALTHY_AFTER), || {
            restarts = restart_backoff();
            let mut problem = lock(&context.problem);
            if problem.as_ref().is_some_and(|problem| problem.reason == TASK_PANICKED) {
                *problem = None;
            }
            tracing::info!(source = %id, "the source's task runs again");
        })
        .await;
        let Some(message) = join_panic(joined) else { return };
        let wait = restarts.next_delay();
        tracing::error!(source = %id, panic = %message, restart_in = ?wait, "a source's task panicked; it starts again after the wait");
        crate::metrics::task_panicked();
        context.report(Some(NotReady {
            reason: TASK_PANICKED,
            message: format!("the source's task panicked ({message}); it starts again in {} s", wait.as_secs_f64()),
        }));
        recovering = true;
        if context.sleep(wait).await.is_err() {
            return;
        }
    }
}

/// Awaits a run; if `healthy_after` is given and the run lasts that long, calls `healthy` once.
async fn watch_run(
    mut run: JoinHandle<()>,
    healthy_after: Option<Duration>,
    healthy: impl FnOnce(),
) -> Result<(), tokio::task::JoinError> {
    let Some(healthy_after) = healthy_after else { return run.await };
    tokio::select! {
        joined = &mut run => return joined,
        () = tokio::time::sleep(healthy_after) => healthy(),
    }
    run.await
}

/// Spawns a runtime task that is started again after a panic (logged at `error`, counted),
/// after a doubling wait; `start` makes each run.
fn spawn_supervised<F, Fut>(what: &'static str, mut start: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut restarts = restart_backoff();
        loop {
            let run = tokio::spawn(start());
            let joined = watch_run(run, Some(HEALTHY_AFTER), || {
                restarts = restart_backoff();
            })
            .await;
            let Some(message) = join_panic(joined) else { return };
            let wait = restarts.next_delay();
            tracing::error!(task = what, panic = %message, restart_in = ?wait, "a sources task panicked; it starts again after the wait");
            crate::metrics::task_panicked();
            tokio::time::sleep(wait).await;
        }
    });
}

/// What an [`Activity`] runs with.
pub struct RunContext {
    declared: Arc<Declared>,
    emitter: Emitter,
    state: Arc<dyn StateStore>,
    stop: watch::Receiver<bool>,
    problem: Arc<Mutex<Option<NotReady>>>,
}

/// The activity was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl RunContext {
    /// The same context for another run of the activity.
    fn again(&self) -> RunContext {
        RunContext {
            declared: Arc::clone(&self.declared),
            emitter: self.emitter.clone(),
            state: Arc::clone(&self.state),
            stop: self.stop.clone(),
            problem: Arc::clone(&self.problem),
        }
    }

    /// The source.
    pub fn source(&self) -> &Declared {
        &self.declared
    }

    /// The backend's state table.
    pub fn state(&self) -> &dyn StateStore {
        self.state.as_ref()
    }

    /// The key of this source's `name` in the state table (removed with the source).
    pub fn state_key(&self, name: &str) -> String {
        format!("{}/{name}", self.declared.id)
    }

    /// Resolves once the activity should stop.
    pub async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stop| *stop).await;
    }

    /// Whether the activity should stop.
    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps for `duration`, or less if asked to stop; `Err` then.
    pub async fn sleep(&self, duration: Duration) -> Result<(), Stopped> {
        tokio::select! {
            () = tokio::time::sleep(duration) => if self.is_stopped() { Err(Stopped) } else { Ok(()) },
            () = self.stopped() => Err(Stopped),
        }
    }

    /// Sends `events` to the sink, retrying until they are durable there (an attempt in flight
    /// is finished, not abandoned) or the activity is asked to stop. An event the broker
    /// refuses for good (over a limit) is dropped — retrying could never send it, and would
    /// hold up every later one — and counted, logged and shown in the status; the others are
    /// sent.
    pub async fn deliver(&self, events: Vec<Event>) -> Result<(), Stopped> {
        let mut wait = ExponentialBackoff::new(RETRY_FIRST, RETRY_MAX);
        let count = events.len();
        loop {
            match self.emitter.emit(events.clone()).await {
                Ok(()) => {
                    self.report(None);
                    crate::metrics::events(self.declared.id.kind, "sent", count);
                    return Ok(());
                }
                Err(SinkError::Refused(LimitExceeded::TooManyEvents { limit, .. })) if limit > 0 && count > limit => {
                    // More than the broker takes at once: in batches it takes.
                    for chunk in events.chunks(limit) {
                        Box::pin(self.deliver(chunk.to_vec())).await?;
                    }
                    return Ok(());
                }
                Err(SinkError::Refused(_)) if count > 1 => {
                    // All or nothing refuses the whole batch for one event: find it.
                    for event in events {
                        Box::pin(self.deliver(vec![event])).await?;
                    }
                    return Ok(());
                }
                Err(SinkError::Refused(limit)) => {
                    let id = events.first().map(|event| event.id().to_owned()).unwrap_or_default();
                    tracing::warn!(source = %self.declared.id, event = %id, %limit, "event refused by the broker; dropped");
                    crate::metrics::events(self.declared.id.kind, "refused", count);
                    self.report(Some(NotReady {
                        reason: "EventRefused",
                        message: format!("event '{id}' was refused and dropped: {limit}"),
                    }));
                    return Ok(());
                }
                Err(error) => {
                    let reason = match error {
                        SinkError::UnknownBroker(_) | SinkError::Unresolved(_) => "SinkNotFound",
                        _ => "SinkUnavailable",
                    };
                    if self.problem_reason() != Some(reason) {
                        tracing::warn!(source = %self.declared.id, %error, "the sink does not take events; retrying");
                    }
                    self.report(Some(NotReady { reason, message: error.to_string() }));
                    self.sleep(wait.next_delay()).await?;
                }
            }
        }
    }

    /// The reason of what the source's status says is wrong now, if anything.
    pub fn problem_reason(&self) -> Option<&'static str> {
        lock(&self.problem).as_ref().map(|problem| problem.reason)
    }

    /// Sets (or, with `None`, clears) what the source's status says is wrong.
    pub fn report(&self, problem: Option<NotReady>) {
        *lock(&self.problem) = problem;
    }
}
