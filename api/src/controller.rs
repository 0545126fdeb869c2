//! Keeps the running system in line with the declarations: one log topic per broker, one
//! group and one dispatcher worker per trigger whose broker exists. Every REST write goes
//! through here, serialised, so the store, the log and the dispatcher never disagree for long.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use switchyard_dispatcher::policy::{Backoff, KnativeRetry};
use switchyard_dispatcher::{Dispatcher, Filter, Format, Ordering, Target, TriggerConfig};
use switchyard_log::{EventLog, LogError};
use switchyard_meta::resources::Kind;
use switchyard_meta::resources::{
    resolve_delivery, AttributesFilter, BackoffPolicy, Condition, DeliveryFormat, DeliveryOrdering, SubscriptionsFilter,
};
use switchyard_meta::store::{Source, Upsert};
use switchyard_meta::{Broker, Store, StoreError, Trigger};
use switchyard_sources::{SourceKind, SourceRef, SourceStatus, Sources};
use tokio::sync::{watch, Mutex};

/// A failure while applying a declaration.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored resource no longer passes validation (stored before a rule existed).
    #[error("stored trigger '{trigger}' is invalid: {error}")]
    Invalid {
        /// The trigger.
        trigger: String,
        /// Why.
        error: switchyard_meta::ValidationError,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A change read from the shared declarations log is not one this version understands.
    #[error("unknown or invalid shared declaration '{0}'")]
    UnknownChange(String),
}

fn json<T: serde::Serialize>(resource: &T) -> Result<Vec<u8>, ControlError> {
    serde_json::to_vec(resource).map_err(|e| ControlError::Store(StoreError::Database(e.to_string())))
}

/// The broker's log topic.
pub fn topic_name(namespace: &str, broker: &str) -> String {
    format!("{namespace}.{broker}")
}

fn group_name(namespace: &str, trigger: &str) -> String {
    format!("{namespace}.{trigger}")
}

/// A log of declaration changes shared by every node of a cluster (Kafka Connect's config
/// topic pattern): each node publishes its REST writes there and applies every change it reads,
/// its own included, so a trigger declared on any node runs on all of them.
#[async_trait::async_trait]
pub trait SharedDeclarations: Send + Sync + 'static {
    /// Publishes a change (`None` deletes); returns its sequence number once it is durable.
    async fn publish(&self, key: &str, value: Option<Vec<u8>>) -> Result<u64, LogError>;
}

/// A change read back from the shared log, in log order.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its position in the shared log.
    pub sequence: u64,
    /// `broker/<namespace>/<name>` or `trigger/<namespace>/<name>`.
    pub key: String,
    /// The resource as stored (JSON), or `None` when deleted.
    pub value: Option<Vec<u8>>,
}

/// The brokers that exist, for ingest's fast lookup: `(namespace, name)` → topic. Shared with
/// the sources, whose events enter brokers the way ingest's do.
#[derive(Default)]
pub struct Brokers(RwLock<HashMap<(String, String), String>>);

impl Brokers {
    /// The topic of an existing broker.
    pub fn topic(&self, namespace: &str, name: &str) -> Option<String> {
        let brokers = self.0.read().unwrap_or_else(|e| e.into_inner());
        brokers.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    fn insert(&self, namespace: &str, name: &str) {
        let mut brokers = self.0.write().unwrap_or_else(|e| e.into_inner());
        brokers.insert((namespace.to_owned(), name.to_owned()), topic_name(namespace, name));
    }

    fn remove(&self, namespace: &str, name: &str) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).remove(&(namespace.to_owned(), name.to_owned()));
    }
}

/// How long a REST write waits for this node to apply its own published change.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn change_key(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", kind.name().to_ascii_lowercase())
}

/// Where declarations are kept.
enum Mode {
    /// Only here: REST writes go to the local store and are applied at once.
    Local,
    /// In a shared log: REST writes are published, and answered once this node has applied
    /// them from the log.
    Shared {
        log: Arc<dyn SharedDeclarations>,
        /// Serialises this node's publications, so their server-set metadata (generation,
        /// uid) is computed against the one before.
        publishing: Mutex<()>,
    },
}

/// What a controller drives.
pub struct Parts {
    /// Where declarations are kept (this node's copy, in shared mode).
    pub store: Store,
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// The triggers' workers.
    pub dispatcher: Dispatcher,
    /// The sources' runtime.
    pub sources: Arc<Sources>,
    /// The brokers that exist (shared with the sources' sinks).
    pub brokers: Arc<Brokers>,
}

/// Declarations applied to the running system.
pub struct Controller {
    store: Store,
    log: Arc<dyn EventLog>,
    dispatcher: Dispatcher,
    sources: Arc<Sources>,
    mode: Mode,
    brokers: Arc<Brokers>,
    /// Serialises changes to the store, the log and the dispatcher.
    writes: Mutex<()>,
    /// The sequence number after the last change applied from the shared log.
    applied: watch::Sender<u64>,
}

impl Controller {
    /// Brings up every stored broker, trigger and source; declarations live in `store` only.
    pub async fn start(parts: Parts) -> Result<Controller, ControlError> {
        let controller = Controller::new(parts, Mode::Local);
        for broker in controller.store.list_brokers(None)? {
            let (namespace, name) = names(&broker.metadata);
            controller.log.create_topic(&topic_name(namespace, name)).await?;
            controller.brokers.insert(namespace, name);
        }
        for trigger in controller.store.list_triggers(None)? {
            controller.activate_or_report(&trigger).await?;
        }
        for &kind in switchyard_sources::kinds() {
            for source in controller.store.list_sources(kind.kind(), None)? {
                controller.sources.apply(kind, &source).await;
            }
        }
        Ok(controller)
    }

    /// A controller whose declarations live in a shared log: `store` is this node's copy,
    /// filled by [`Controller::apply`] from every change read from the log.
    pub fn shared(parts: Parts, declarations: Arc<dyn SharedDeclarations>) -> Controller {
        Controller::new(parts, Mode::Shared { log: declarations, publishing: Mutex::new(()) })
    }

    fn new(parts: Parts, mode: Mode) -> Controller {
        let Parts { store, log, dispatcher, sources, brokers } = parts;
        Controller {
            store,
            log,
            dispatcher,
            sources,
            mode,
            brokers,
            writes: Mutex::new(()),
            applied: watch::channel(0).0,
        }
    }

    /// The topic of an existing broker.
    pub fn broker_topic(&self, namespace: &str, name: &str) -> Option<String> {
        self.brokers.topic(namespace, name)
    }

    /// The sources' runtime (webhooks are answered there).
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The store, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits until every change before `sequence` has been applied on this node.
    pub async fn applied(&self, sequence: u64) {
        let mut applied = self.applied.subscribe();
        let _ = applied.wait_for(|&applied| applied >= sequence).await;
    }

    /// Creates or replaces a broker.
    pub async fn put_broker(&self, broker: Broker) -> Result<(Broker, Upsert), ControlError> {
        let (namespace, name) = names(&broker.metadata);
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        match &self.mode {
            Mode::Local => {
                let _guard = self.writes.lock().await;
                self.log.create_topic(&topic_name(&namespace, &name)).await?;
                let (stored, upsert) = self.store.put_broker(broker)?;
                self.broker_stored(&namespace, &name).await?;
                Ok((stored, upsert))
            }
            Mode::Shared { log, publishing } => {
                let _guard = publishing.lock().await;
                // Before the answer, so that ingest on any node may start at once.
                self.log.create_topic(&topic_name(&namespace, &name)).await?;
                let (prepared, upsert) = self.store.prepare_broker(broker)?;
                self.publish(log.as_ref(), change_key(Kind::Broker, &namespace, &name), Some(json(&prepared)?)).await?;
                Ok((prepared, upsert))
            }
        }
    }

    /// Deletes a broker with its events. Its triggers stay declared, not ready, until a broker
    /// of that name exists again (Knative behaves the same).
    pub async fn delete_broker(&self, namespace: &str, name: &str) -> Result<Option<Broker>, ControlError> {
        match &self.mode {
            Mode::Local => {
                let _guard = self.writes.lock().await;
                let broker = self.store.get_broker(namespace, name)?;
                if broker.is_some() {
                    self.broker_removed(namespace, name).await?;
                }
                Ok(broker)
            }
            Mode::Shared { log, publishing } => {
                let _guard = publishing.lock().await;
                let broker = self.store.get_broker(namespace, name)?;
                if broker.is_some() {
                    self.publish(log.as_ref(), change_key(Kind::Broker, namespace, name), None).await?;
                }
                Ok(broker)
            }
        }
    }

    /// Creates or replaces a trigger. A new trigger receives events appended after this returns.
    pub async fn put_trigger(&self, trigger: Trigger) -> Result<(Trigger, Upsert), ControlError> {
        match &self.mode {
            Mode::Local => {
                let _guard = self.writes.lock().await;
                self.leave_previous_broker(&trigger).await?;
                let (stored, upsert) = self.store.put_trigger(trigger)?;
                self.activate(&stored).await?;
                Ok((stored, upsert))
            }
            Mode::Shared { log, publishing } => {
                let _guard = publishing.lock().await;
                let (prepared, upsert) = self.store.prepare_trigger(trigger)?;
                let (namespace, name) = names(&prepared.metadata);
                let key = change_key(Kind::Trigger, namespace, name);
                // Answered once applied here, which creates the group: events appended after
                // the answer reach the trigger.
                self.publish(log.as_ref(), key, Some(json(&prepared)?)).await?;
                Ok((prepared, upsert))
            }
        }
    }

    /// Deletes a trigger and its progress.
    pub async fn delete_trigger(&self, namespace: &str, name: &str) -> Result<Option<Trigger>, ControlError> {
        match &self.mode {
            Mode::Local => {
                let _guard = self.writes.lock().await;
                let trigger = self.store.get_trigger(namespace, name)?;
                if let Some(trigger) = &trigger {
                    self.trigger_removed(trigger).await?;
                }
                Ok(trigger)
            }
            Mode::Shared { log, publishing } => {
                let _guard = publishing.lock().await;
                let trigger = self.store.get_trigger(namespace, name)?;
                if trigger.is_some() {
                    self.publish(log.as_ref(), change_key(Kind::Trigger, namespace, name), None).await?;
                }
                Ok(trigger)
            }
        }
    }

    /// Creates or replaces a source (parsed and validated by its kind).
    pub async fn put_source(
        &self,
        kind: &'static dyn SourceKind,
        source: Source,
    ) -> Result<(Source, Upsert), ControlError> {
        match &self.mode {
            Mode::Local => {
                let _guard = self.writes.lock().await;
                let (stored, upsert) = self.store.put_source(kind.kind(), source)?;
                self.sources.apply(kind, &stored).await;
                Ok((stored, upsert))
            }
            Mode::Shared { log, publishing } => {
                let _guard = publishing.lock().await;
                let (prepared, upsert) = self.store.prepare_source(kind.kind(), source)?;
                let (namespace, name) = names(&prepared.metadata);
                let key = change_key(Kind::Source(kind.kind()), namespace, name);
                self.publish(log.as_ref(), key, Some(json(&prepared)?)).await?;
                Ok((prepared, upsert))
            }
        }
    }

    /// Deletes a source and its recorded progress.
    pub async fn delete_source(
        &self,
        kind: &'static dyn SourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Source>, ControlError> {
        match &self.mode {
            Mode::Local => {
                let _guard = self.writes.lock().await;
                let source = self.store.get_source(kind.kind(), namespace, name)?;
                if source.is_some() {
                    self.source_removed(kind, namespace, name).await?;
                }
                Ok(source)
            }
            Mode::Shared { log, publishing } => {
                let _guard = publishing.lock().await;
                let source = self.store.get_source(kind.kind(), namespace, name)?;
                if source.is_some() {
                    self.publish(log.as_ref(), change_key(Kind::Source(kind.kind()), namespace, name), None).await?;
                }
                Ok(source)
            }
        }
    }

    async fn source_removed(
        &self,
        kind: &'static dyn SourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<(), ControlError> {
        self.store.delete_source(kind.kind(), namespace, name)?;
        let id = SourceRef { kind: kind.kind(), namespace: namespace.to_owned(), name: name.to_owned() };
        self.sources.remove(&id).await;
        Ok(())
    }

    /// A source's status; `base_url` is where this server is reached.
    pub fn source_status(&self, kind: &'static dyn SourceKind, source: &Source, base_url: &str) -> SourceStatus {
        self.sources.status(kind, source, base_url)
    }

    async fn publish(
        &self,
        log: &dyn SharedDeclarations,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Result<(), ControlError> {
        let sequence = log.publish(&key, value).await?;
        tokio::time::timeout(APPLY_TIMEOUT, self.applied(sequence + 1)).await.map_err(|_| {
            LogError::Unavailable(format!("change '{key}' was published but not applied here within {APPLY_TIMEOUT:?}"))
        })?;
        Ok(())
    }

    /// Applies a change read from the shared log (this node's own, or another's). A change
    /// that cannot be applied is logged and skipped: the log is the truth, and a later change
    /// of the same resource replaces it.
    pub async fn apply(&self, change: Change) {
        let _guard = self.writes.lock().await;
        if let Err(error) = self.apply_change(&change).await {
            tracing::error!(key = %change.key, sequence = change.sequence, %error, "cannot apply a shared declaration");
        }
        self.applied.send_replace(change.sequence + 1);
    }

    async fn apply_change(&self, change: &Change) -> Result<(), ControlError> {
        let mut parts = change.key.splitn(3, '/');
        let (Some(kind), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ControlError::UnknownChange(change.key.clone()));
        };
        let decode = |bytes: &[u8]| -> Result<serde_json::Value, ControlError> {
            serde_json::from_slice(bytes).map_err(|e| ControlError::UnknownChange(format!("{}: {e}", change.key)))
        };
        match (kind, &change.value) {
            ("broker", Some(bytes)) => {
                let broker: Broker = serde_json::from_value(decode(bytes)?)
                    .map_err(|e| ControlError::UnknownChange(format!("{}: {e}", change.key)))?;
                self.log.create_topic(&topic_name(namespace, name)).await?;
                self.store.replace_broker(&broker)?;
                self.broker_stored(namespace, name).await
            }
            ("broker", None) => self.broker_removed(namespace, name).await,
            ("trigger", Some(bytes)) => {
                let trigger: Trigger = serde_json::from_value(decode(bytes)?)
                    .map_err(|e| ControlError::UnknownChange(format!("{}: {e}", change.key)))?;
                self.leave_previous_broker(&trigger).await?;
                self.store.replace_trigger(&trigger)?;
                self.activate_or_report(&trigger).await
            }
            ("trigger", None) => match self.store.get_trigger(namespace, name)? {
                Some(trigger) => self.trigger_removed(&trigger).await,
                None => Ok(()),
            },
            (kind, value) => {
                let kind = switchyard_sources::kind_by_name(kind)
                    .ok_or_else(|| ControlError::UnknownChange(change.key.clone()))?;
                match value {
                    Some(bytes) => {
                        let source: Source = serde_json::from_value(decode(bytes)?)
                            .map_err(|e| ControlError::UnknownChange(format!("{}: {e}", change.key)))?;
                        self.store.replace_source(kind.kind(), &source)?;
                        self.sources.apply(kind, &source).await;
                        Ok(())
                    }
                    None => self.source_removed(kind, namespace, name).await,
                }
            }
        }
    }

    /// A broker was stored: serve its ingest and (re)start the triggers that use it, since
    /// they inherit its delivery spec.
    async fn broker_stored(&self, namespace: &str, name: &str) -> Result<(), ControlError> {
        for trigger in self.store.list_triggers(Some(namespace))? {
            if trigger.spec.broker == name {
                self.activate_or_report(&trigger).await?;
            }
        }
        // Only now can events enter (ingest, sources): a trigger declared before its broker
        // has its group already, so it misses none of them.
        self.brokers.insert(namespace, name);
        Ok(())
    }

    async fn broker_removed(&self, namespace: &str, name: &str) -> Result<(), ControlError> {
        self.brokers.remove(namespace, name);
        for trigger in self.store.list_triggers(Some(namespace))? {
            if trigger.spec.broker == name {
                let (_, trigger_name) = names(&trigger.metadata);
                self.dispatcher.stop(namespace, trigger_name).await;
            }
        }
        self.store.delete_broker(namespace, name)?;
        self.log.delete_topic(&topic_name(namespace, name)).await?;
        Ok(())
    }

    /// A trigger moving to another broker: its old position means nothing there.
    async fn leave_previous_broker(&self, trigger: &Trigger) -> Result<(), ControlError> {
        let (namespace, name) = names(&trigger.metadata);
        let previous = self.store.get_trigger(namespace, name)?;
        if let Some(previous) = previous.filter(|p| p.spec.broker != trigger.spec.broker) {
            self.dispatcher.stop(namespace, name).await;
            let old_topic = topic_name(namespace, &previous.spec.broker);
            match self.log.delete_group(&old_topic, &group_name(namespace, name)).await {
                Ok(()) | Err(LogError::UnknownTopic(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    async fn trigger_removed(&self, trigger: &Trigger) -> Result<(), ControlError> {
        let (namespace, name) = names(&trigger.metadata);
        self.dispatcher.stop(namespace, name).await;
        self.store.delete_trigger(namespace, name)?;
        match self.log.delete_group(&topic_name(namespace, &trigger.spec.broker), &group_name(namespace, name)).await {
            Ok(()) | Err(LogError::UnknownTopic(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The broker's status: its ingest address.
    pub fn broker_status(&self, broker: &Broker, base_url: &str) -> serde_json::Value {
        let (namespace, name) = names(&broker.metadata);
        serde_json::json!({
            "address": { "url": format!("{base_url}/{namespace}/{name}") },
            "conditions": [Condition::ready()],
        })
    }

    /// The trigger's status: ready when its broker exists.
    pub fn trigger_status(&self, trigger: &Trigger) -> serde_json::Value {
        let (namespace, _) = names(&trigger.metadata);
        let condition = if self.broker_topic(namespace, &trigger.spec.broker).is_some() {
            Condition::ready()
        } else {
            Condition::not_ready("BrokerDoesNotExist", format!("broker '{}' does not exist", trigger.spec.broker))
        };
        serde_json::json!({
            "subscriberUri": trigger.spec.subscriber.uri,
            "conditions": [condition],
        })
    }

    /// How far behind each running trigger is.
    pub async fn backlogs(&self) -> Vec<switchyard_dispatcher::Backlog> {
        self.dispatcher.backlogs().await
    }

    /// Redelivers dead letters of a trigger; false when the trigger is not running.
    pub async fn redrive(&self, namespace: &str, name: &str, selection: switchyard_dispatcher::Redrive) -> bool {
        self.dispatcher.redrive(namespace, name, selection).await
    }

    /// Stops every source, then every trigger, letting in-flight deliveries finish for up to
    /// `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.sources.shutdown().await;
        self.dispatcher.shutdown(grace).await;
    }

    /// Like `activate`, but a trigger stored before a validation rule existed is reported and
    /// left stopped instead of failing every other trigger with it.
    async fn activate_or_report(&self, trigger: &Trigger) -> Result<(), ControlError> {
        match self.activate(trigger).await {
            Err(ControlError::Invalid { trigger, error }) => {
                tracing::error!(%trigger, %error, "trigger not started: fix it with a PUT");
                Ok(())
            }
            other => other,
        }
    }

    /// Starts (or restarts) the trigger's worker if its broker exists.
    async fn activate(&self, trigger: &Trigger) -> Result<(), ControlError> {
        let (namespace, name) = names(&trigger.metadata);
        let Some(broker) = self.store.get_broker(namespace, &trigger.spec.broker)? else {
            self.dispatcher.stop(namespace, name).await;
            return Ok(());
        };
        let topic = topic_name(namespace, &trigger.spec.broker);
        let group = group_name(namespace, name);
        // Durable before the PUT is answered: every event appended afterwards reaches the trigger.
        self.log.create_group(&topic, &group).await?;
        // A trigger's delivery replaces its broker's as a whole (Knative).
        let delivery = resolve_delivery(trigger.spec.delivery.as_ref().or(broker.spec.delivery.as_ref()))
            .map_err(|error| ControlError::Invalid { trigger: format!("{namespace}/{name}"), error })?;
        let format = match delivery.format {
            DeliveryFormat::Binary => Format::Binary,
            DeliveryFormat::Json => Format::Json,
        };
        let target = |uri: &str| -> Result<Target, ControlError> {
            // Validated as an absolute http(s) URL when the resource was submitted.
            let url = url::Url::parse(uri).map_err(|e| ControlError::Invalid {
                trigger: format!("{namespace}/{name}"),
                error: switchyard_meta::ValidationError::field("uri", e.to_string()),
            })?;
            Ok(Target { url, format, namespace: namespace.to_owned(), timeout: delivery.timeout })
        };
        let config = TriggerConfig {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            topic,
            group,
            filter: compile_filter(trigger.spec.filter.as_ref(), &trigger.spec.filters).map_err(|message| {
                ControlError::Invalid {
                    trigger: format!("{namespace}/{name}"),
                    error: switchyard_meta::ValidationError::field("spec.filters", message),
                }
            })?,
            target: target(trigger.spec.subscriber.uri.as_deref().unwrap_or_default())?,
            dead_letter_sink: delivery.dead_letter_uri.as_deref().map(target).transpose()?,
            max_in_flight: delivery.max_in_flight as usize,
            ordering: match delivery.ordering {
                DeliveryOrdering::Unordered => Ordering::Unordered,
                DeliveryOrdering::Ordered => Ordering::Ordered,
            },
            rate_limit: delivery.rate_limit,
            retry: Arc::new(KnativeRetry {
                retries: delivery.retry,
                backoff: match delivery.backoff_policy {
                    BackoffPolicy::Linear => Backoff::Linear,
                    BackoffPolicy::Exponential => Backoff::Exponential,
                },
                delay: delivery.backoff_delay,
                retry_after_max: delivery.retry_after_max,
            }),
        };
        self.dispatcher.start(config).await;
        Ok(())
    }
}

fn names(metadata: &switchyard_meta::resources::Metadata) -> (&str, &str) {
    (metadata.namespace.as_deref().unwrap_or_default(), metadata.name.as_deref().unwrap_or_default())
}

/// Knative: a non-empty `filters` overrides `filter`; an empty one does not. The filters were
/// validated on the way in, so compiling fails only for a resource stored before a rule existed.
pub fn compile_filter(filter: Option<&AttributesFilter>, filters: &[SubscriptionsFilter]) -> Result<Filter, String> {
    if !filters.is_empty() {
        return filters.iter().map(compile_subscriptions_filter).collect::<Result<_, _>>().map(Filter::AllOf);
    }
    Ok(match filter {
        Some(filter) if !filter.attributes.is_empty() => {
            Filter::Attributes(filter.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        _ => Filter::All,
    })
}

fn compile_subscriptions_filter(filter: &SubscriptionsFilter) -> Result<Filter, String> {
    let pairs =
        |map: &std::collections::BTreeMap<String, String>| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let nested = |filters: &[SubscriptionsFilter]| {
        filters.iter().map(compile_subscriptions_filter).collect::<Result<Vec<_>, _>>()
    };
    Ok(match filter {
        SubscriptionsFilter::Exact(map) => Filter::Exact(pairs(map)),
        SubscriptionsFilter::Prefix(map) => Filter::Prefix(pairs(map)),
        SubscriptionsFilter::Suffix(map) => Filter::Suffix(pairs(map)),
        SubscriptionsFilter::All(filters) => Filter::AllOf(nested(filters)?),
        SubscriptionsFilter::Any(filters) => Filter::AnyOf(nested(filters)?),
        SubscriptionsFilter::Not(filter) => Filter::Not(Box::new(compile_subscriptions_filter(filter)?)),
        SubscriptionsFilter::Cesql(expression) => {
            Filter::Cesql(Arc::new(switchyard_cesql::parse(expression).map_err(|e| e.to_string())?))
        }
        SubscriptionsFilter::Jsonpath(query) => {
            Filter::JsonPath(Arc::new(switchyard_dispatcher::filter::parse_jsonpath(query)?))
        }
    })
}
