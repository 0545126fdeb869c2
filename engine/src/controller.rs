//! Invariant: a write is answered only once it runs on the node that took it, and never
//! reported done when it could not take effect there.
//!
//! The controller keeps what runs in line with the declarations, with one path for every write
//! on every backend: a declaration is checked, published to the backend's declaration log, and
//! takes effect when it is applied from there — on a single node at once, in a cluster on
//! every node in the same order. A write is answered once this node has applied it; one that
//! could not take effect here is not reported as done: the answer says so, the resource's
//! status says why, and it is retried.
//!
//! What runs: a topic per broker (taking events once its triggers have their groups), a group
//! and a dispatcher worker per trigger whose broker exists, and the sources.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use switchyard_dispatcher::{dead_letter_scope, Dispatcher, Redrive, TriggerPlan, TriggerRef};
use switchyard_log::addresses::Addresses;
use switchyard_log::{Admit, Change, DeclarationLog, EventLog, LogError};
use switchyard_meta::event_policy::{self, EventPolicy, EventPolicyStatus};
use switchyard_meta::kafka_sink::{self, KafkaSink, KafkaSinkStatus};
use switchyard_meta::status::{
    knative, Address, AppliedPolicy, BrokerStatus, Condition, SigningStatus, SourceStatus, TriggerStatus,
};
use switchyard_meta::{Broker, Trigger, Upsert, ValidationError};
use switchyard_sources::{SourceRef, Sources};
use tokio::sync::watch;

use crate::admission::{topic_name, Admission};
use crate::declaration::{Catalog, Declaration, Kind, SourceDeclaration, Unreadable};
use crate::kafka_sinks::{self, KafkaSinks};
use crate::references::{self, External, Role};
use crate::{loops, metrics, Quotas};

/// How long a write waits for this node to apply its own published change.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often declarations that failed to take effect are tried again, and object references
/// that could not be resolved are resolved again (besides whenever the resolver says an address
/// may have changed).
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How long resolving one object reference may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a write was not done.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The declaration is not valid; the message names the field.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The log (or the declaration log) failed; retry later.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A create beyond a namespace's quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The declaration is stored, but could not take effect on this node yet.
    #[error("'{key}' is declared but not active yet: {message}; it is retried, and its status says why")]
    NotActive {
        /// The declaration.
        key: String,
        /// Why.
        message: String,
    },
}

/// Why a declaration does not run as declared on this node: a Knative condition's reason and
/// message, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    reason: &'static str,
    message: String,
    retry: bool,
}

impl Problem {
    fn invalid(error: &ValidationError) -> Problem {
        Problem { reason: "InvalidSpec", message: error.to_string(), retry: false }
    }

    fn failed(error: &LogError) -> Problem {
        Problem { reason: "ActivationFailed", message: error.to_string(), retry: true }
    }
}

/// What the controller drives.
pub(crate) struct Parts {
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) declarations: Arc<dyn DeclarationLog>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) sources: Arc<Sources>,
    pub(crate) kafka_sinks: Arc<KafkaSinks>,
    pub(crate) quotas: Quotas,
    /// Resolves object references through an API server; `None` without one.
    pub(crate) addresses: Option<Arc<dyn Addresses>>,
}

/// Where the object references of a trigger (its subscriber, the dead-letter sink of the
/// delivery it runs with) or of a broker (its dead-letter sink) lead now: each an address, or
/// why there is none. `None` for a destination that names no object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Resolution {
    subscriber: Option<Result<String, String>>,
    dead_letter: Option<Result<String, String>>,
}

impl Resolution {
    fn of(&self, role: Role) -> Option<&Result<String, String>> {
        match role {
            Role::Subscriber => self.subscriber.as_ref(),
            Role::DeadLetterSink => self.dead_letter.as_ref(),
        }
    }

    /// Whether every reference resolved.
    fn complete(&self) -> bool {
        [&self.subscriber, &self.dead_letter].into_iter().all(|outcome| !matches!(outcome, Some(Err(_))))
    }

    /// Whether both lead to the same addresses (messages of what is unresolved aside): what
    /// decides whether a trigger restarts.
    fn same_addresses(&self, other: &Resolution) -> bool {
        let addresses = |resolution: &Resolution| {
            [&resolution.subscriber, &resolution.dead_letter]
                .map(|outcome| outcome.as_ref().map(|outcome| outcome.as_ref().ok().cloned()))
        };
        addresses(self) == addresses(other)
    }

    fn unresolved(&self) -> usize {
        [&self.subscriber, &self.dead_letter].into_iter().filter(|outcome| matches!(outcome, Some(Err(_)))).count()
    }
}

/// Declarations applied to the running system.
pub struct Controller {
    parts: Parts,
    /// Shared with the KafkaSinks, which look their sinks up in it.
    catalog: Arc<Catalog>,
    /// Serialises this node's publications, so that the server-set metadata of each (uid,
    /// generation) is computed against the one before.
    publishing: tokio::sync::Mutex<()>,
    /// Serialises applying, so that the catalog, the log and the dispatcher change together.
    applying: tokio::sync::Mutex<()>,
    /// The sequence number after the last change applied.
    applied: watch::Sender<u64>,
    /// Declarations that do not run as declared on this node, by key.
    problems: Mutex<HashMap<String, Problem>>,
    /// Where this node serves ingest, once it listens: declarations that would deliver a
    /// broker's events back into it here are refused (`loops`).
    node: OnceLock<SocketAddr>,
    /// The object references of the triggers and brokers that have some, as last resolved, by
    /// declaration key.
    resolutions: Mutex<HashMap<String, Resolution>>,
}

fn group_name(namespace: &str, trigger: &str) -> String {
    format!("{namespace}.{trigger}")
}

fn trigger_ref(trigger: &Trigger) -> TriggerRef {
    let (namespace, name) = trigger.names();
    TriggerRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        broker: trigger.spec.broker.clone(),
        topic: topic_name(namespace, &trigger.spec.broker),
        group: group_name(namespace, name),
    }
}

impl Controller {
    pub(crate) fn new(parts: Parts, catalog: Arc<Catalog>) -> Controller {
        Controller {
            parts,
            catalog,
            publishing: tokio::sync::Mutex::new(()),
            applying: tokio::sync::Mutex::new(()),
            applied: watch::channel(0).0,
            problems: Mutex::default(),
            node: OnceLock::new(),
            resolutions: Mutex::default(),
        }
    }

    /// Tells the controller where this node serves ingest, for the loop guard and the
    /// addresses of KafkaSinks.
    pub fn serving_at(&self, address: SocketAddr) {
        let _ = self.node.set(address);
    }

    /// Where this node is reached from itself: its listen address, an unspecified IP replaced
    /// by loopback (`http://127.0.0.1` before it listens).
    fn base_url(&self) -> String {
        let Some(mut address) = self.node.get().copied() else { return "http://127.0.0.1".to_owned() };
        if address.ip().is_unspecified() {
            address.set_ip(match address {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{address}")
    }

    /// Waits until every change numbered below `sequence` is applied on this node.
    pub async fn applied(&self, sequence: u64) {
        let mut applied = self.applied.subscribe();
        let _ = applied.wait_for(|&applied| applied >= sequence).await;
    }

    /// Creates or replaces a declaration of `kind` from a request body (`{"spec": …}` or a
    /// whole Knative object); returns it as stored once it runs on this node.
    pub async fn put(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        body: &[u8],
    ) -> Result<(Declaration, Upsert), ControlError> {
        let declaration = Declaration::check(kind, namespace, name, body, self.parts.addresses.is_some())?;
        if let Some(node) = self.node.get() {
            loops::refuse_self_delivery(&declaration, *node)?;
        }
        let _publishing = self.publishing.lock().await;
        let key = declaration.key();
        let existing = self.catalog.get(&key);
        if existing.is_none() {
            self.check_quota(kind, namespace)?;
        }
        let (prepared, upsert) = declaration.prepared(existing.as_ref());
        if let Declaration::Broker(broker) = &prepared {
            // Before the answer, on this node, so that ingest may start at once.
            let (namespace, name) = broker.names();
            self.parts.log.create_topic(&topic_name(namespace, name)).await?;
        }
        self.publish(&key, Some(prepared.encode())).await?;
        Ok((prepared, upsert))
    }

    /// Refuses one more declaration of `kind` in a namespace that holds its quota of them.
    fn check_quota(&self, kind: Kind, namespace: &str) -> Result<(), ControlError> {
        let (held, quota, what, setting) = match kind {
            Kind::Broker => {
                (self.catalog.count(kind, namespace), self.parts.quotas.brokers, "brokers", "max_brokers_per_namespace")
            }
            Kind::Trigger => (
                self.catalog.count(kind, namespace),
                self.parts.quotas.triggers,
                "triggers",
                "max_triggers_per_namespace",
            ),
            // Rules about a namespace's routing, as triggers are: bounded by the same number.
            Kind::EventPolicy => (
                self.catalog.count(kind, namespace),
                self.parts.quotas.triggers,
                "event policies",
                "max_triggers_per_namespace",
            ),
            // KafkaSinks are counted with the sources: both are a client of an outside system.
            Kind::Source(_) | Kind::KafkaSink => (
                Kind::sources().chain([Kind::KafkaSink]).map(|kind| self.catalog.count(kind, namespace)).sum(),
                self.parts.quotas.sources,
                "sources and sinks",
                "max_sources_per_namespace",
            ),
        };
        match held < quota {
            true => Ok(()),
            false => Err(ControlError::QuotaExceeded(format!(
                "namespace '{namespace}' already has {held} {what}, its quota ({setting} = {quota}): delete one first, or raise the quota"
            ))),
        }
    }

    /// Deletes a declaration; returns it as it was, or `None` if there was none.
    pub async fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<Declaration>, ControlError> {
        let _publishing = self.publishing.lock().await;
        let key = kind.key(namespace, name);
        let Some(existing) = self.catalog.get(&key) else { return Ok(None) };
        self.publish(&key, None).await?;
        Ok(Some(existing))
    }

    /// Publishes a change and waits until this node has applied it; fails if it could not
    /// take effect here.
    async fn publish(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), ControlError> {
        let sequence = self.parts.declarations.publish(key, value).await?;
        tokio::time::timeout(APPLY_TIMEOUT, self.applied(sequence + 1)).await.map_err(|_| {
            LogError::Unavailable(format!("change '{key}' was published but not applied here within {APPLY_TIMEOUT:?}"))
        })?;
        match self.problem(key) {
            Some(problem) => Err(ControlError::NotActive { key: key.to_owned(), message: problem.message }),
            None => Ok(()),
        }
    }

    /// Applies a change read from the declaration log (this node's own, or another's). What
    /// fails is recorded against the declaration (its status) and retried; the change counts
    /// as applied either way, since the log is the truth and a later change replaces it.
    pub async fn apply(&self, change: Change) {
        let _applying = self.applying.lock().await;
        let outcome = match &change.value {
            Some(bytes) => match Declaration::decode(&change.key, bytes) {
                Ok(declaration) => {
                    let previous = self.catalog.insert(&change.key, bytes);
                    self.activate(&declaration, previous.as_ref()).await
                }
                Err(unreadable) => Err(unreadable_problem(&unreadable)),
            },
            None => match self.catalog.remove(&change.key) {
                Some(removed) => self.deactivate(&removed).await,
                None => Ok(()),
            },
        };
        self.record(&change.key, outcome);
        self.applied.send_replace(change.sequence + 1);
    }

    /// Records a change whose application panicked: the change counts as applied (a node that
    /// waited for it must not wait forever, and the next change replaces it), its declaration
    /// is reported not ready, and it is tried again like any failure that may pass.
    pub(crate) fn apply_panicked(&self, key: &str, sequence: Option<u64>, message: &str) {
        tracing::error!(%key, panic = %message, "applying a declaration panicked; it is retried");
        metrics::task_panicked("declarations");
        let problem = Problem {
            reason: "ApplyPanicked",
            message: format!("applying it failed unexpectedly ({message}); it is retried"),
            retry: true,
        };
        self.record(key, Err(problem));
        if let Some(sequence) = sequence {
            self.applied.send_if_modified(|applied| {
                let advanced = *applied < sequence + 1;
                *applied = (*applied).max(sequence + 1);
                advanced
            });
        }
    }

    /// The declarations that failed to take effect for a reason that may pass.
    pub(crate) fn to_retry(&self) -> Vec<String> {
        let problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        problems.iter().filter(|(_, problem)| problem.retry).map(|(key, _)| key.clone()).collect()
    }

    /// Tries a declaration that failed to take effect again.
    pub(crate) async fn retry(&self, key: &str) {
        let _applying = self.applying.lock().await;
        let outcome = match self.catalog.get(key) {
            Some(declaration) => self.activate(&declaration, None).await,
            None => Ok(()),
        };
        if outcome.is_ok() {
            tracing::info!(%key, "declaration took effect on retry");
        }
        self.record(key, outcome);
    }

    fn record(&self, key: &str, outcome: Result<(), Problem>) {
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => {
                problems.remove(key);
            }
            Err(problem) => {
                if problems.get(key) != Some(&problem) {
                    tracing::error!(%key, reason = problem.reason, message = %problem.message, "declaration does not run as declared");
                    let kind = key.split('/').next().and_then(Kind::by_name).map_or("unknown", Kind::name);
                    metrics::declaration_failed(kind);
                }
                problems.insert(key.to_owned(), problem);
            }
        }
    }

    fn problem(&self, key: &str) -> Option<Problem> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// Makes what runs match a declaration that was stored (replacing `previous`, if any).
    async fn activate(&self, declaration: &Declaration, previous: Option<&Declaration>) -> Result<(), Problem> {
        match declaration {
            Declaration::Broker(broker) => self.broker_stored(broker).await,
            Declaration::Trigger(trigger) => {
                if let Some(Declaration::Trigger(previous)) = previous {
                    self.leave_previous_broker(trigger, previous).await?;
                }
                self.start_trigger(trigger).await
            }
            Declaration::Source(SourceDeclaration { kind, source }) => {
                self.parts.sources.apply(*kind, source).await;
                Ok(())
            }
            Declaration::KafkaSink(sink) => self.parts.kafka_sinks.prepare(sink).await.map_err(|error| Problem {
                reason: match error {
                    LogError::UnknownTopic(_) => "TopicNotPresent",
                    _ => "KafkaUnavailable",
                },
                message: error.to_string(),
                retry: true,
            }),
            // Read by admission at every request to the brokers it applies to: nothing runs.
            Declaration::EventPolicy(_) => Ok(()),
        }
    }

    /// Stops what runs for a declaration that was deleted.
    async fn deactivate(&self, declaration: &Declaration) -> Result<(), Problem> {
        let (namespace, name) = declaration.names();
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).remove(&declaration.key());
        self.remember(&declaration.key(), Resolution::default());
        match declaration {
            Declaration::Broker(_) => {
                self.parts.admission.close_broker(namespace, name);
                for trigger in self.catalog.triggers_of(namespace, name) {
                    let (_, trigger_name) = trigger.names();
                    self.parts.dispatcher.stop(namespace, trigger_name).await;
                }
                self.parts.log.delete_topic(&topic_name(namespace, name)).await.map_err(|e| Problem::failed(&e))
            }
            Declaration::Trigger(trigger) => {
                self.parts.dispatcher.stop(namespace, name).await;
                let topic = topic_name(namespace, &trigger.spec.broker);
                match self.parts.log.delete_group(&topic, &group_name(namespace, name)).await {
                    Ok(()) | Err(LogError::UnknownTopic(_)) => {}
                    Err(error) => return Err(Problem::failed(&error)),
                }
                // Its dead letters go with it: a new trigger of the same name must not inherit
                // (and be able to redrive) another subscriber's events.
                let scope = dead_letter_scope(namespace, name);
                match self.parts.log.dead_letters().purge(&scope).await {
                    Ok(0) => Ok(()),
                    Ok(purged) => {
                        tracing::info!(trigger = %scope, purged, "deleted the dead letters of a deleted trigger");
                        Ok(())
                    }
                    Err(error) => Err(Problem::failed(&error)),
                }
            }
            Declaration::Source(source) => {
                let id = SourceRef { kind: source.kind.kind(), namespace: namespace.to_owned(), name: name.to_owned() };
                self.parts.sources.remove(&id).await;
                Ok(())
            }
            // Nothing runs for a KafkaSink (its producer is shared by cluster and stays), nor for
            // an EventPolicy.
            Declaration::KafkaSink(_) | Declaration::EventPolicy(_) => Ok(()),
        }
    }

    /// A broker was stored: its topic exists, then its triggers start (they inherit its
    /// delivery), and only then does it take events.
    ///
    /// Invariant: a broker takes events only once its triggers have their groups, so a trigger
    /// declared before its broker misses none of them.
    async fn broker_stored(&self, broker: &Broker) -> Result<(), Problem> {
        let (namespace, name) = broker.names();
        self.parts.log.create_topic(&topic_name(namespace, name)).await.map_err(|e| Problem::failed(&e))?;
        self.resolve_broker(broker).await.map_err(|e| Problem::invalid(&e))?;
        for trigger in self.catalog.triggers_of(namespace, name) {
            let key = Kind::Trigger.key(namespace, trigger.names().1);
            let outcome = self.start_trigger(&trigger).await;
            self.record(&key, outcome);
        }
        self.parts.admission.open_broker(namespace, name);
        Ok(())
    }

    /// A trigger moving to another broker: its old position means nothing there.
    async fn leave_previous_broker(&self, trigger: &Trigger, previous: &Trigger) -> Result<(), Problem> {
        if previous.spec.broker == trigger.spec.broker {
            return Ok(());
        }
        let (namespace, name) = trigger.names();
        self.parts.dispatcher.stop(namespace, name).await;
        let old_topic = topic_name(namespace, &previous.spec.broker);
        match self.parts.log.delete_group(&old_topic, &group_name(namespace, name)).await {
            Ok(()) | Err(LogError::UnknownTopic(_)) => Ok(()),
            Err(error) => Err(Problem::failed(&error)),
        }
    }

    /// Starts (or restarts) the trigger's worker if its broker exists, with its plan compiled
    /// against the broker's delivery and its object references resolved. While one cannot be
    /// resolved the trigger does not run, but its group exists: the events it receives wait in
    /// the log, and are delivered once the reference resolves (Knative's trigger is then not
    /// ready, `SubscriberResolved=False`; the write is done, and its status says why).
    async fn start_trigger(&self, trigger: &Trigger) -> Result<(), Problem> {
        let (namespace, name) = trigger.names();
        let key = Kind::Trigger.key(namespace, name);
        let Some(broker) = self.catalog.broker(namespace, &trigger.spec.broker) else {
            self.parts.dispatcher.stop(namespace, name).await;
            self.remember(&key, Resolution::default());
            return Ok(());
        };
        let inherited = broker.spec.delivery.as_ref();
        let resolution = match references::trigger_externals(&trigger.spec, inherited, namespace) {
            Ok(externals) => self.resolve_externals(&externals).await,
            Err(error) => {
                self.parts.dispatcher.stop(namespace, name).await;
                self.remember(&key, Resolution::default());
                return Err(Problem::invalid(&error));
            }
        };
        // An unresolved reference compiles against a stand-in address: the plan does not run.
        let address = |role: Role, external: &External| match resolution.of(role) {
            Some(Ok(address)) => Ok(address.clone()),
            _ => Ok(external.address("http://127.0.0.1/").unwrap_or_else(|_| "http://127.0.0.1/".to_owned())),
        };
        let compiled = kafka_sinks::resolve_references(&trigger.spec, namespace, &self.base_url())
            .and_then(|local| references::with_addresses(&local, inherited, namespace, &address))
            .and_then(|(resolved, inherited)| TriggerPlan::compile(&resolved, inherited.as_ref()));
        let plan = match compiled {
            Ok(plan) => plan,
            Err(error) => {
                // Stored before a rule existed: reported, and left stopped until a PUT fixes it.
                self.parts.dispatcher.stop(namespace, name).await;
                self.remember(&key, Resolution::default());
                return Err(Problem::invalid(&error));
            }
        };
        let reference = trigger_ref(trigger);
        // Invariant: a trigger's group exists (durably) before its creation is acknowledged, so
        // every event appended after the answer reaches it.
        self.parts.log.create_group(&reference.topic, &reference.group).await.map_err(|e| Problem::failed(&e))?;
        // Read now, not when declared: a variable or file may come later. Until it can be read
        // the trigger does not run (its events wait in the log), and it is retried.
        let plan = match plan.read_secrets() {
            Ok(plan) => plan,
            Err(error) => {
                self.parts.dispatcher.stop(namespace, name).await;
                self.remember(&key, resolution);
                return Err(Problem { reason: error.reason(), message: error.to_string(), retry: true });
            }
        };
        let complete = resolution.complete();
        self.remember(&key, resolution);
        match complete {
            // Restarting resumes from the committed position, and a replaced worker's in-flight
            // deliveries finish first (`Dispatcher::start`): nothing is lost when an address changes.
            true => self.parts.dispatcher.start(reference, plan).await,
            false => self.parts.dispatcher.stop(namespace, name).await,
        }
        Ok(())
    }

    /// Resolves object references through the API server (each bounded by [`RESOLVE_TIMEOUT`]).
    async fn resolve_externals(&self, externals: &[(Role, External)]) -> Resolution {
        let mut resolution = Resolution::default();
        for (role, external) in externals {
            let outcome = match &self.parts.addresses {
                // Stored while the server had an API server: refused on writes now.
                None => Err(external.needs_kubernetes().to_string()),
                Some(addresses) => {
                    match tokio::time::timeout(RESOLVE_TIMEOUT, addresses.resolve(&external.object)).await {
                        Ok(Ok(resolved)) => external.address(&resolved),
                        Ok(Err(message)) => Err(message),
                        Err(_) => Err(format!("{} was not resolved within {RESOLVE_TIMEOUT:?}", external.object)),
                    }
                }
            };
            match role {
                Role::Subscriber => resolution.subscriber = Some(outcome),
                Role::DeadLetterSink => resolution.dead_letter = Some(outcome),
            }
        }
        resolution
    }

    /// Resolves a broker's dead-letter sink, for its status (its triggers resolve it themselves).
    async fn resolve_broker(&self, broker: &Broker) -> Result<(), ValidationError> {
        let (namespace, name) = broker.names();
        let externals: Vec<(Role, External)> =
            references::delivery_external(broker.spec.delivery.as_ref(), "spec.delivery", namespace)?
                .map(|external| (Role::DeadLetterSink, external))
                .into_iter()
                .collect();
        let resolution = self.resolve_externals(&externals).await;
        self.remember(&Kind::Broker.key(namespace, name), resolution);
        Ok(())
    }

    /// Records where a declaration's references lead (forgets it for none), logging each
    /// reference that stops or starts resolving, and counts the unresolved ones.
    fn remember(&self, key: &str, resolution: Resolution) {
        let mut resolutions = self.resolutions.lock().unwrap_or_else(|e| e.into_inner());
        let previous = match resolution == Resolution::default() {
            true => resolutions.remove(key),
            false => resolutions.insert(key.to_owned(), resolution.clone()),
        };
        let previous = previous.unwrap_or_default();
        for role in [Role::Subscriber, Role::DeadLetterSink] {
            match (previous.of(role), resolution.of(role)) {
                (before, Some(Err(message))) if !matches!(before, Some(Err(_))) => {
                    tracing::warn!(%key, ?role, %message, "a reference cannot be resolved; the trigger waits for it");
                }
                (before, Some(Ok(address))) if before != resolution.of(role) => {
                    tracing::info!(%key, ?role, %address, "a reference resolved");
                }
                _ => {}
            }
        }
        let unresolved: usize = resolutions.values().map(Resolution::unresolved).sum();
        metrics::unresolved_references(unresolved);
    }

    fn resolution(&self, key: &str) -> Option<Resolution> {
        self.resolutions.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// Resolves every object reference again, and restarts the triggers whose addresses changed
    /// (only those): what follows the resolver's changes, and retries the unresolved.
    pub(crate) async fn resolve_again(&self) {
        let keys: Vec<String> = self.resolutions.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        for key in keys {
            match self.catalog.get(&key) {
                Some(Declaration::Trigger(trigger)) => {
                    let (namespace, _) = trigger.names();
                    let Some(broker) = self.catalog.broker(namespace, &trigger.spec.broker) else { continue };
                    let inherited = broker.spec.delivery.as_ref();
                    let Ok(externals) = references::trigger_externals(&trigger.spec, inherited, namespace) else {
                        continue;
                    };
                    // Resolved before taking the lock, so that a slow API server does not hold
                    // up declarations; `start_trigger` resolves again (from the cache) under it.
                    let now = self.resolve_externals(&externals).await;
                    let before = self.resolution(&key);
                    if before.as_ref() == Some(&now) {
                        continue;
                    }
                    let _applying = self.applying.lock().await;
                    // Changed meanwhile: what was applied resolved it already.
                    if self.catalog.get(&key) != Some(Declaration::Trigger(trigger.clone())) {
                        continue;
                    }
                    if before.is_some_and(|before| before.same_addresses(&now)) {
                        // Only why it is unresolved changed: its status says so, nothing restarts.
                        self.remember(&key, now);
                        continue;
                    }
                    tracing::info!(%key, "a trigger's references lead elsewhere now; it restarts");
                    let outcome = self.start_trigger(&trigger).await;
                    self.record(&key, outcome);
                }
                Some(Declaration::Broker(broker)) => {
                    let _applying = self.applying.lock().await;
                    let _ = self.resolve_broker(&broker).await;
                }
                _ => {
                    let _applying = self.applying.lock().await;
                    if self.catalog.get(&key).is_none() {
                        self.remember(&key, Resolution::default());
                    }
                }
            }
        }
    }

    /// A declaration as this node holds it.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Declaration> {
        self.catalog.get(&kind.key(namespace, name))
    }

    /// The declarations of `kind`, in `namespace` or every namespace, sorted.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Declaration> {
        self.catalog.list(kind, namespace)
    }

    /// A broker's status; `base_url` is where this server is reached.
    pub fn broker_status(&self, broker: &Broker, base_url: &str) -> BrokerStatus {
        let (namespace, name) = broker.names();
        let key = Kind::Broker.key(namespace, name);
        let dead_letter = self.resolution(&key).and_then(|resolution| resolution.dead_letter);
        let problem = self.problem(&key).or_else(|| match &dead_letter {
            Some(Err(message)) => {
                Some(Problem { reason: knative::DEAD_LETTER_SINK_UNRESOLVED, message: message.clone(), retry: false })
            }
            _ => None,
        });
        let mut conditions = vec![condition(problem)];
        if broker.spec.delivery.as_ref().is_some_and(|delivery| delivery.dead_letter_sink.is_some()) {
            conditions.push(dead_letter_condition(dead_letter.as_ref(), true));
        }
        let policies = self
            .event_policies(namespace, name)
            .iter()
            .map(|policy| AppliedPolicy {
                api_version: event_policy::API_VERSION.to_owned(),
                name: policy.names().1.to_owned(),
            })
            .collect();
        BrokerStatus {
            observed_generation: broker.metadata.generation,
            address: Address { url: format!("{base_url}/{namespace}/{name}") },
            conditions,
            policies,
        }
    }

    /// The EventPolicies that apply to a broker, sorted by name: none, and the broker admits
    /// whoever authentication lets in; some, and only the senders one of them names.
    pub fn event_policies(&self, namespace: &str, broker: &str) -> Vec<EventPolicy> {
        if self.catalog.count(Kind::EventPolicy, namespace) == 0 {
            return Vec::new();
        }
        let labels = self.catalog.broker(namespace, broker).map(|b| b.metadata.labels).unwrap_or_default();
        self.catalog
            .list(Kind::EventPolicy, Some(namespace))
            .into_iter()
            .filter_map(|declaration| match declaration {
                Declaration::EventPolicy(policy) if policy.spec.applies_to(broker, &labels) => Some(policy),
                _ => None,
            })
            .collect()
    }

    /// An EventPolicy's status: always ready (it is read at every request), with the brokers
    /// of its namespace it applies to now.
    pub fn event_policy_status(&self, policy: &EventPolicy) -> EventPolicyStatus {
        let (namespace, name) = policy.names();
        let brokers = self
            .catalog
            .list(Kind::Broker, Some(namespace))
            .into_iter()
            .filter_map(|declaration| match declaration {
                Declaration::Broker(broker) if policy.spec.applies_to(broker.names().1, &broker.metadata.labels) => {
                    Some(broker.names().1.to_owned())
                }
                _ => None,
            })
            .collect();
        EventPolicyStatus {
            observed_generation: policy.metadata.generation,
            conditions: vec![condition(self.problem(&Kind::EventPolicy.key(namespace, name)))],
            brokers,
        }
    }

    /// A trigger's status: ready once it runs; otherwise why not.
    pub fn trigger_status(&self, trigger: &Trigger) -> TriggerStatus {
        let (namespace, name) = trigger.names();
        let broker = &trigger.spec.broker;
        let problem = self.problem(&Kind::Trigger.key(namespace, name)).or_else(|| {
            let fault = self.parts.dispatcher.fault(namespace, name)?;
            Some(Problem { reason: fault.reason, message: fault.message, retry: false })
        });
        let problem = problem.or_else(|| {
            let missing = !self.parts.admission.broker_exists(namespace, broker);
            missing.then(|| Problem {
                reason: "BrokerDoesNotExist",
                message: format!("broker '{broker}' does not exist"),
                retry: false,
            })
        });
        // Knative's `SubscriberResolved`: a KafkaSink referred to must exist (events meanwhile
        // fail delivery, and are retried and dead-lettered by the trigger's policy).
        let problem = problem.or_else(|| {
            let references = kafka_sinks::trigger_references(&trigger.spec, namespace).ok()?;
            let (field, missing) =
                references.into_iter().find(|(_, sink)| self.get(Kind::KafkaSink, namespace, sink).is_none())?;
            Some(Problem {
                reason: "SubscriberNotResolved",
                message: format!("{field}.ref names kafkasink '{namespace}/{missing}', which does not exist"),
                retry: false,
            })
        });
        let resolution = self.resolution(&Kind::Trigger.key(namespace, name)).unwrap_or_default();
        // Knative's `Ready` mirrors the first subcondition that fails.
        let problem = problem.or_else(|| {
            let (reason, message) = match (&resolution.subscriber, &resolution.dead_letter) {
                (Some(Err(message)), _) => (knative::SUBSCRIBER_UNRESOLVED, message),
                (_, Some(Err(message))) => (knative::DEAD_LETTER_SINK_UNRESOLVED, message),
                _ => return None,
            };
            Some(Problem { reason, message: message.clone(), retry: false })
        });
        let subscriber_object =
            references::external(&trigger.spec.subscriber, "spec.subscriber", namespace).ok().flatten().is_some();
        let resolved = kafka_sinks::resolve_references(&trigger.spec, namespace, &self.base_url());
        let subscriber_uri = match (subscriber_object, &resolution.subscriber) {
            (true, Some(Ok(address))) => Some(address.clone()),
            (true, _) => None,
            (false, _) => resolved.map_or_else(|_| trigger.spec.subscriber.uri.clone(), |spec| spec.subscriber.uri),
        };
        let subscriber_resolved = match (&resolution.subscriber, subscriber_object) {
            (Some(Err(message)), _) => {
                Condition::failed(knative::SUBSCRIBER_RESOLVED, knative::SUBSCRIBER_UNRESOLVED, message.clone())
            }
            // Not tried: the trigger does not run (no broker yet, or the problem `Ready` names).
            (None, true) => Condition::unknown(
                knative::SUBSCRIBER_RESOLVED,
                "SubscriberNotResolvedYet",
                "the subscriber is resolved once the trigger can run".to_owned(),
            ),
            _ => match &problem {
                Some(problem) if problem.reason == "SubscriberNotResolved" => Condition::failed(
                    knative::SUBSCRIBER_RESOLVED,
                    knative::SUBSCRIBER_UNRESOLVED,
                    problem.message.clone(),
                ),
                _ => Condition::met(knative::SUBSCRIBER_RESOLVED),
            },
        };
        let inherited = self.catalog.broker(namespace, broker).and_then(|broker| broker.spec.delivery);
        let delivery = references::effective_delivery(&trigger.spec, inherited.as_ref());
        let has_dead_letter_sink = delivery.is_some_and(|delivery| delivery.dead_letter_sink.is_some());
        TriggerStatus {
            observed_generation: trigger.metadata.generation,
            subscriber_uri,
            conditions: vec![
                condition(problem),
                subscriber_resolved,
                dead_letter_condition(resolution.dead_letter.as_ref(), has_dead_letter_sink),
            ],
            signing: trigger
                .spec
                .signing
                .is_some()
                .then(|| SigningStatus { public_keys: self.parts.dispatcher.public_keys(namespace, name) }),
        }
    }

    /// A KafkaSink's status; `base_url` is where this server is reached.
    pub fn kafka_sink_status(&self, sink: &KafkaSink, base_url: &str) -> KafkaSinkStatus {
        let (namespace, name) = sink.names();
        KafkaSinkStatus {
            observed_generation: sink.metadata.generation,
            address: Address { url: kafka_sink::address(base_url, namespace, name) },
            conditions: vec![condition(self.problem(&Kind::KafkaSink.key(namespace, name)))],
        }
    }

    /// A source's status; `base_url` is where this server is reached.
    pub fn source_status(&self, source: &SourceDeclaration, base_url: &str) -> SourceStatus {
        self.parts.sources.status(source.kind, &source.source, base_url)
    }

    /// How far behind each running trigger is.
    pub async fn backlogs(&self) -> Vec<switchyard_dispatcher::Backlog> {
        self.parts.dispatcher.backlogs().await
    }

    /// Stops every trigger, letting in-flight deliveries finish for up to `grace`, and makes
    /// their progress durable.
    pub(crate) async fn stop_triggers(&self, grace: Duration) {
        self.parts.dispatcher.shutdown(grace).await;
    }

    /// Redelivers dead letters of a trigger; false when the trigger is not running.
    pub async fn redrive(&self, namespace: &str, name: &str, selection: Redrive) -> bool {
        self.parts.dispatcher.redrive(namespace, name, selection).await
    }
}

fn condition(problem: Option<Problem>) -> Condition {
    problem.map_or_else(Condition::ready, |problem| Condition::not_ready(problem.reason, problem.message))
}

/// Knative's `DeadLetterSinkResolved`: `True` (with `DeadLetterSinkNotConfigured` when there is
/// no sink), or `False` with why.
fn dead_letter_condition(resolved: Option<&Result<String, String>>, configured: bool) -> Condition {
    let ty = knative::DEAD_LETTER_SINK_RESOLVED;
    match (resolved, configured) {
        (Some(Err(message)), _) => Condition::failed(ty, knative::DEAD_LETTER_SINK_UNRESOLVED, message.clone()),
        (_, true) => Condition::met(ty),
        (_, false) => {
            let (reason, message) = knative::DEAD_LETTER_SINK_NOT_CONFIGURED;
            Condition::met_because(ty, reason, message.to_owned())
        }
    }
}

fn unreadable_problem(unreadable: &Unreadable) -> Problem {
    Problem { reason: "InvalidSpec", message: unreadable.to_string(), retry: false }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_log::testkit::memory::{backend, Fault, MemoryDeclarations, MemoryLog};
    use switchyard_log::EventLog;
    use switchyard_meta::status::Condition;
    use switchyard_sources::Clients;

    use super::*;
    use crate::{Engine, Settings};

    const BROKER: &[u8] = br#"{"spec":{"delivery":{"retry":3}}}"#;
    const TRIGGER: &[u8] = br#"{"spec":{"broker":"b","subscriber":{"uri":"http://127.0.0.1:9/"}}}"#;

    async fn engine(log: &Arc<MemoryLog>, declarations: &Arc<MemoryDeclarations>) -> Engine {
        Engine::start(backend(log, declarations), Settings::default(), Clients::default()).await.unwrap()
    }

    fn trigger_condition(engine: &Engine) -> Condition {
        let Some(Declaration::Trigger(trigger)) = engine.controller().get(Kind::Trigger, "ns", "t") else {
            panic!("no trigger")
        };
        engine.controller().trigger_status(&trigger).conditions.remove(0)
    }

    #[tokio::test(start_paused = true)]
    async fn every_write_goes_through_the_declaration_log_and_runs_when_answered() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        let engine = engine(&log, &declarations).await;
        let controller = engine.controller();
        let (_, upsert) = controller.put(Kind::Trigger, "ns", "t", TRIGGER).await.unwrap();
        assert_eq!(upsert, Upsert::Created);
        assert_eq!(trigger_condition(&engine).reason.as_deref(), Some("BrokerDoesNotExist"));
        controller.put(Kind::Broker, "ns", "b", BROKER).await.unwrap();
        // Answered once it runs here: the broker takes events, the trigger has its group.
        assert!(engine.admission().broker_exists("ns", "b"));
        assert_eq!(log.committed("ns.b", "ns.t"), Some(0));
        assert_eq!(trigger_condition(&engine), Condition::ready());
        let keys: Vec<String> = declarations.published().into_iter().map(|change| change.key).collect();
        assert_eq!(keys, ["trigger/ns/t", "broker/ns/b"]);
        let (_, upsert) = controller.put(Kind::Broker, "ns", "b", BROKER).await.unwrap();
        assert_eq!(upsert, Upsert::Replaced);
        let deleted = controller.delete(Kind::Broker, "ns", "b").await.unwrap();
        assert!(matches!(deleted, Some(Declaration::Broker(_))));
        assert!(!engine.admission().broker_exists("ns", "b"));
        assert!(log.end_offsets("ns.b").await.is_err(), "the broker's topic is gone");
        assert_eq!(controller.delete(Kind::Broker, "ns", "b").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_cannot_take_effect_is_not_answered_as_done_and_is_retried() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        let engine = engine(&log, &declarations).await;
        let controller = engine.controller();
        controller.put(Kind::Broker, "ns", "b", BROKER).await.unwrap();
        log.faults().fail_next(Fault::CreateGroup, 1);
        let error = controller.put(Kind::Trigger, "ns", "t", TRIGGER).await.unwrap_err();
        assert!(matches!(&error, ControlError::NotActive { key, .. } if key == "trigger/ns/t"), "{error}");
        assert_eq!(log.committed("ns.b", "ns.t"), None, "no group behind it");
        let condition = trigger_condition(&engine);
        assert_eq!((condition.status.as_str(), condition.reason.as_deref()), ("False", Some("ActivationFailed")));
        // Stored all the same (the log is the truth), and retried until it runs.
        tokio::time::sleep(RETRY_INTERVAL * 2).await;
        assert_eq!(log.committed("ns.b", "ns.t"), Some(0));
        assert_eq!(trigger_condition(&engine), Condition::ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_node_runs_every_declaration_before_it_starts() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        {
            let engine = engine(&log, &declarations).await;
            engine.controller().put(Kind::Broker, "ns", "b", BROKER).await.unwrap();
            engine.controller().put(Kind::Trigger, "ns", "t", TRIGGER).await.unwrap();
            engine.shutdown(Duration::from_secs(1)).await;
        }
        log.delete_group("ns.b", "ns.t").await.unwrap();
        let replayed = MemoryDeclarations::new();
        for change in declarations.published() {
            replayed.publish(&change.key, change.value).await.unwrap();
        }
        let engine = engine(&log, &replayed).await;
        assert!(engine.admission().broker_exists("ns", "b"));
        assert_eq!(log.committed("ns.b", "ns.t"), Some(0), "the trigger's group was made again at start");
        assert_eq!(trigger_condition(&engine), Condition::ready());
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_declarations_are_refused_before_anything_is_published() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        let engine = engine(&log, &declarations).await;
        let bad = br#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"delivery":{"rateLimit":0}}}"#;
        let error = engine.controller().put(Kind::Trigger, "ns", "t", bad).await.unwrap_err();
        assert!(error.to_string().contains("spec.delivery.rateLimit"), "{error}");
        assert!(declarations.published().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stored_declaration_that_cannot_compile_comes_up_not_ready_and_the_node_starts() {
        // Stored before today's bounds: `rateLimit: 1e-300` once crash-looped every start.
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        {
            let engine = engine(&log, &declarations).await;
            engine.controller().put(Kind::Broker, "ns", "b", BROKER).await.unwrap();
            engine.controller().put(Kind::Trigger, "ns", "t", TRIGGER).await.unwrap();
            engine.shutdown(Duration::from_secs(1)).await;
        }
        let replayed = MemoryDeclarations::new();
        for change in declarations.published() {
            let mut value = change.value;
            if change.key == "trigger/ns/t" {
                let mut stored: serde_json::Value = serde_json::from_slice(&value.unwrap()).unwrap();
                stored["spec"]["delivery"] = serde_json::json!({"rateLimit": 1e-300});
                value = Some(serde_json::to_vec(&stored).unwrap());
            }
            replayed.publish(&change.key, value).await.unwrap();
        }
        let engine = engine(&log, &replayed).await;
        assert!(engine.admission().broker_exists("ns", "b"));
        let condition = trigger_condition(&engine);
        assert_eq!((condition.status.as_str(), condition.reason.as_deref()), ("False", Some("InvalidSpec")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_namespace_holds_at_most_its_quota_and_replacing_is_always_allowed() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        let settings = Settings { quotas: Quotas { brokers: 1, triggers: 2, sources: 0 }, ..Settings::default() };
        let engine = Engine::start(backend(&log, &declarations), settings, Clients::default()).await.unwrap();
        let controller = engine.controller();
        controller.put(Kind::Broker, "ns", "b", BROKER).await.unwrap();
        let error = controller.put(Kind::Broker, "ns", "c", BROKER).await.unwrap_err();
        assert!(matches!(error, ControlError::QuotaExceeded(_)), "{error}");
        assert_eq!(
            error.to_string(),
            "namespace 'ns' already has 1 brokers, its quota (max_brokers_per_namespace = 1): delete one first, or raise the quota"
        );
        controller.put(Kind::Broker, "ns", "b", BROKER).await.expect("replacing is not a create");
        controller.put(Kind::Broker, "other", "c", BROKER).await.expect("quotas are per namespace");
        controller.put(Kind::Trigger, "ns", "t1", TRIGGER).await.unwrap();
        controller.put(Kind::Trigger, "ns", "t2", TRIGGER).await.unwrap();
        assert!(controller.put(Kind::Trigger, "ns", "t3", TRIGGER).await.is_err());
        controller.delete(Kind::Trigger, "ns", "t1").await.unwrap();
        controller.put(Kind::Trigger, "ns", "t3", TRIGGER).await.expect("room again after a delete");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_triggers_dead_letters_go_with_it() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        let engine = engine(&log, &declarations).await;
        let controller = engine.controller();
        controller.put(Kind::Broker, "ns", "b", BROKER).await.unwrap();
        controller.put(Kind::Trigger, "ns", "t", TRIGGER).await.unwrap();
        let store = engine.dead_letters();
        let letter = switchyard_log::DeadLetter {
            id: String::new(),
            event: switchyard_log::testkit::sample_event("1", 4),
            reason: "test".into(),
            attempts: 1,
            last_status: None,
            last_error: None,
            dead_lettered_at: "2026-01-01T00:00:00Z".into(),
        };
        store.put("ns/t", letter).await.unwrap();
        controller.delete(Kind::Trigger, "ns", "t").await.unwrap();
        controller.put(Kind::Trigger, "ns", "t", TRIGGER).await.unwrap();
        assert!(store.list("ns/t", None, 10).await.unwrap().is_empty(), "the new trigger starts clean");
    }

    /// An API server's addresses, set by the test.
    #[derive(Default)]
    struct FakeAddresses {
        known: Mutex<HashMap<String, String>>,
        changes: watch::Sender<u64>,
    }

    impl FakeAddresses {
        fn set(&self, name: &str, address: Option<&str>) {
            let mut known = self.known.lock().unwrap();
            match address {
                Some(address) => known.insert(name.to_owned(), address.to_owned()),
                None => known.remove(name),
            };
            self.changes.send_modify(|version| *version += 1);
        }
    }

    #[async_trait::async_trait]
    impl Addresses for FakeAddresses {
        async fn resolve(&self, reference: &switchyard_log::addresses::ObjectRef) -> Result<String, String> {
            self.known
                .lock()
                .unwrap()
                .get(&reference.name)
                .cloned()
                .ok_or_else(|| format!("{reference} does not exist"))
        }

        fn changes(&self) -> watch::Receiver<u64> {
            self.changes.subscribe()
        }
    }

    const SERVICE_TRIGGER: &[u8] = br#"{"spec":{"broker":"b","subscriber":{"ref":{"apiVersion":"serving.knative.dev/v1","kind":"Service","name":"shop"},"uri":"/orders"}}}"#;

    async fn running(engine: &Engine) -> Vec<String> {
        let mut names: Vec<String> = engine.backlogs().await.into_iter().map(|backlog| backlog.name).collect();
        names.sort();
        names
    }

    #[tokio::test(start_paused = true)]
    async fn an_unresolved_reference_is_accepted_not_ready_and_runs_once_it_resolves() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        let addresses = Arc::new(FakeAddresses::default());
        let clients = Clients { addresses: Some(addresses.clone()), ..Clients::default() };
        let engine = Engine::start(backend(&log, &declarations), Settings::default(), clients).await.unwrap();
        let controller = engine.controller();
        controller.put(Kind::Broker, "ns", "b", BROKER).await.unwrap();
        let (_, upsert) =
            controller.put(Kind::Trigger, "ns", "t", SERVICE_TRIGGER).await.expect("accepted, as Knative does");
        assert_eq!(upsert, Upsert::Created);
        assert_eq!(log.committed("ns.b", "ns.t"), Some(0), "its group exists: events wait for it");
        assert!(running(&engine).await.is_empty());
        let Some(Declaration::Trigger(trigger)) = controller.get(Kind::Trigger, "ns", "t") else { panic!() };
        let status = controller.trigger_status(&trigger);
        let message = "Service ns/shop (serving.knative.dev/v1) does not exist";
        assert_eq!(status.conditions[0], Condition::not_ready(knative::SUBSCRIBER_UNRESOLVED, message.to_owned()));
        assert_eq!(
            status.conditions[1],
            Condition::failed(knative::SUBSCRIBER_RESOLVED, knative::SUBSCRIBER_UNRESOLVED, message.to_owned())
        );
        assert_eq!(status.conditions[2].reason.as_deref(), Some("DeadLetterSinkNotConfigured"));
        assert_eq!(status.subscriber_uri, None);

        addresses.set("shop", Some("http://127.0.0.3/"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(running(&engine).await, ["t"], "started on the change, without waiting for a retry");
        let status = controller.trigger_status(&trigger);
        assert_eq!(status.subscriber_uri.as_deref(), Some("http://127.0.0.3/orders"));
        assert_eq!(status.conditions[..2], [Condition::ready(), Condition::met(knative::SUBSCRIBER_RESOLVED)]);

        addresses.set("shop", None);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(running(&engine).await.is_empty(), "stopped while its object is gone");
        assert_eq!(controller.trigger_status(&trigger).conditions[1].status, "False");
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_address_is_followed_and_a_dead_letter_sink_ref_resolves() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        let addresses = Arc::new(FakeAddresses::default());
        addresses.set("shop", Some("http://127.0.0.3/"));
        let clients = Clients { addresses: Some(addresses.clone()), ..Clients::default() };
        let engine = Engine::start(backend(&log, &declarations), Settings::default(), clients).await.unwrap();
        let controller = engine.controller();
        controller.put(Kind::Broker, "ns", "b", BROKER).await.unwrap();
        controller.put(Kind::Trigger, "ns", "t", SERVICE_TRIGGER).await.unwrap();
        let dead = br#"{"spec":{"broker":"b","subscriber":{"uri":"http://127.0.0.1:9/"},"delivery":{"deadLetterSink":{"ref":{"apiVersion":"v1alpha1.example.dev/v1","kind":"Sink","name":"dead"}}}}}"#;
        controller.put(Kind::Trigger, "ns", "other", dead).await.unwrap();
        let Some(Declaration::Trigger(other)) = controller.get(Kind::Trigger, "ns", "other") else { panic!() };
        let conditions = controller.trigger_status(&other).conditions;
        assert_eq!(conditions[0].reason.as_deref(), Some(knative::DEAD_LETTER_SINK_UNRESOLVED));
        assert_eq!(conditions[2].ty, knative::DEAD_LETTER_SINK_RESOLVED);
        assert_eq!(conditions[2].status, "False");
        addresses.set("dead", Some("http://127.0.0.9/"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(running(&engine).await, ["other", "t"]);
        let replaced = |name: &str| {
            let Some(Declaration::Trigger(trigger)) = controller.get(Kind::Trigger, "ns", name) else { panic!() };
            controller.trigger_status(&trigger).subscriber_uri
        };
        assert_eq!(replaced("t").as_deref(), Some("http://127.0.0.3/orders"));
        addresses.set("shop", Some("http://127.0.0.4/"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(replaced("t").as_deref(), Some("http://127.0.0.4/orders"));
        assert_eq!(controller.trigger_status(&other).conditions[2], Condition::met(knative::DEAD_LETTER_SINK_RESOLVED));
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_api_server_object_references_are_refused_naming_the_field() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        let engine = engine(&log, &declarations).await;
        let error = engine.controller().put(Kind::Trigger, "ns", "t", SERVICE_TRIGGER).await.unwrap_err();
        assert!(matches!(error, ControlError::Invalid(_)), "{error}");
        assert!(error.to_string().contains("spec.subscriber.ref"), "{error}");
        let broker = br#"{"spec":{"delivery":{"deadLetterSink":{"ref":{"apiVersion":"serving.knative.dev/v1","kind":"Service","name":"d"}}}}}"#;
        let error = engine.controller().put(Kind::Broker, "ns", "b", broker).await.unwrap_err().to_string();
        assert!(error.contains("spec.delivery.deadLetterSink.ref"), "{error}");
        let ping = Kind::by_name("PingSource").unwrap();
        let source = br#"{"spec":{"schedule":"* * * * *","sink":{"ref":{"apiVersion":"serving.knative.dev/v1","kind":"Service","name":"s"}}}}"#;
        let error = engine.controller().put(ping, "ns", "p", source).await.unwrap_err().to_string();
        assert!(error.contains("spec.sink.ref"), "{error}");
        assert!(declarations.published().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_delivering_into_its_own_broker_here_is_refused() {
        let (log, declarations) = (MemoryLog::new(), MemoryDeclarations::new());
        let engine = engine(&log, &declarations).await;
        let controller = engine.controller();
        controller.serving_at("127.0.0.1:8080".parse().unwrap());
        let looping = br#"{"spec":{"broker":"b","subscriber":{"uri":"http://localhost:8080/ns/b"}}}"#;
        let error = controller.put(Kind::Trigger, "ns", "t", looping).await.unwrap_err().to_string();
        assert!(error.contains("spec.subscriber.uri") && error.contains("'http://localhost:8080/ns/b'"), "{error}");
        let chained = br#"{"spec":{"broker":"b","subscriber":{"uri":"http://localhost:8080/ns/c"}}}"#;
        controller.put(Kind::Trigger, "ns", "t", chained).await.expect("another broker is fine");
        let broker = br#"{"spec":{"delivery":{"deadLetterSink":{"uri":"http://127.0.0.1:8080/ns/b"}}}}"#;
        let error = controller.put(Kind::Broker, "ns", "b", broker).await.unwrap_err().to_string();
        assert!(error.contains("spec.delivery.deadLetterSink.uri"), "{error}");
        assert!(declarations.published().iter().all(|change| change.key != "broker/ns/b"));
    }
}
